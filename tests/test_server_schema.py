"""Property-based API test: schemathesis against the live OpenAPI schema, no 5xx allowed.

The server runs with the identity ranker and a ScriptedEngine (for /v1/decompose and
/v1/ask) so the run stays fast; examples per operation are bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from _live_server import live_server
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.server import ServerSettings, create_app
from hoprank.server.state import AskOutcome
from hoprank.types import Document, Usage

TOKEN = "schema-token-0123456789"


def _scripted(messages: Any) -> str:
    return '"first sub-question?", "second sub-question?"]}'


async def _ask(question: str, *, top_k: int) -> AskOutcome:
    doc = Document(id="d1", text=f"evidence for {question[:20]}")
    return AskOutcome(answer="an answer [d1]", citations=[doc], evidence=[doc], usage=Usage(llm_calls=1))


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = create_app(
        ServerSettings(api_token=TOKEN, max_documents=20, max_document_chars=500, max_query_chars=200),
        engine=ScriptedEngine(_scripted),
        asker=_ask,
    )
    with live_server(app) as url:
        yield url


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_server_errors(base_url: str, mode: GenerationMode) -> None:
    # schemathesis' pytest plugin (from_fixture) breaks on pytest 9, so drive hypothesis directly.
    api = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [r.ok() for r in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/rerank", "/v1/decompose", "/v1/ask", "/healthz"}
    seen: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for op in operations:
        if mode is GenerationMode.NEGATIVE and op.method.upper() == "GET":
            continue  # nothing to break in a GET without parameters

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            response = case.call(base_url=base_url, headers=headers, timeout=10)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (
                case.method,
                case.path,
                response.status_code,
                response.text[:300],
            )
            if mode is GenerationMode.POSITIVE:
                case.validate_response(
                    response,
                    checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
                )

        run()
    assert sum(seen.values()) >= 3 * 5, seen
    if mode is GenerationMode.POSITIVE:
        assert seen.get(200, 0) > 0, seen
    else:
        assert seen.get(422, 0) > 0, seen
