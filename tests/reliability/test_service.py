"""The HTTP service under failure and load: secrets never leak, auth covers every /v1
route, and a bounded load test (``benchmarks/load_test.py``) sees no unintended errors.

Real pieces throughout: uvicorn on 127.0.0.1, a real OpenAIEngine talking to the fault
server (the "upstream" that fails), ``hoprank serve`` as a subprocess for the load test.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import pytest
from _faultkit import good_reply
from _live_server import live_server
from servers.fault_server import FaultServer, RecordedRequest, Reply, hang, rate_limited, status

from hoprank.llm.engines.openai_engine import OpenAIEngine
from hoprank.llm.transport.retry import RetryPolicy
from hoprank.server import ServerSettings, create_app
from hoprank.server.state import AskOutcome
from hoprank.types import Document

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-proj-Zq8secretKEY0123456789abcdefXYZ"
TOKEN = "hoprank-bearer-7f3c9a1e5b2d4680aa"
DOCS = ["the cat sat on the mat", "dogs bark at night", "a passage about cats and mats"]


def _echo_key(req: RecordedRequest) -> Reply:
    """An upstream that rejects the key and quotes it back (as real APIs do)."""
    auth = req.headers.get("authorization", "")
    return status(401, f"Incorrect API key provided: {auth.removeprefix('Bearer ')}. See your dashboard.")


UPSTREAM: dict[str, tuple[Any, int, str]] = {
    # name: (reply builder, HTTP status the service answers, error type)
    "auth-fails-and-echoes-key": (_echo_key, 502, "engine_error"),
    "server-error-500": (
        lambda req: status(500, f"upstream exploded for key {API_KEY}"),
        502,
        "engine_error",
    ),
    "rate-limited": (lambda req: rate_limited("2"), 503, "upstream_rate_limited"),
    "hangs": (lambda req: hang(3.0), 504, "upstream_timeout"),
}


class Upstream:
    def __init__(self) -> None:
        self.fn: Any = lambda req: good_reply(req.json)

    def __call__(self, req: RecordedRequest) -> Reply:
        reply: Reply = self.fn(req)
        return reply


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FaultServer, Upstream]]:
    up = Upstream()
    with FaultServer(up) as fs:
        yield fs, up


def _service(fs: FaultServer, **settings: Any) -> Any:
    engine = OpenAIEngine(
        "fault-model",
        base_url=fs.base_url,
        api_key=API_KEY,
        server="vllm",
        timeout=0.5,
        retry=RetryPolicy(max_attempts=2, initial=0.01, max_wait=0.02, total_budget_s=5),
    )
    # the engine is handed over directly: the service does not know the key, the engine
    # must keep it out of everything it raises or logs on its own
    return create_app(ServerSettings(api_token=TOKEN, **settings), engine=engine)


def _leaks(text: str) -> list[str]:
    return [s for s in (API_KEY, TOKEN, API_KEY[-12:], TOKEN[-12:]) if s in text]


@pytest.mark.parametrize("case", sorted(UPSTREAM))
def test_upstream_failures_never_leak_secrets(
    upstream: tuple[FaultServer, Upstream], case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fs, up = upstream
    build, code, kind = UPSTREAM[case]
    up.fn = build
    fs.requests.clear()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with live_server(_service(fs)) as url, httpx.Client(base_url=url, timeout=30) as c:
        for ranker in ("rankgpt", "first", "pointwise"):
            r = c.post(
                "/v1/rerank", json={"query": "cats", "documents": DOCS, "ranker": ranker}, headers=auth
            )
            assert r.status_code == code, (ranker, r.text)
            body = r.json()
            assert body["error"]["type"] == kind and body["request_id"]
            assert not _leaks(r.text) and "Traceback" not in r.text
            assert not _leaks(json.dumps(dict(r.headers)))
    assert fs.requests and all(req.headers["authorization"] == f"Bearer {API_KEY}" for req in fs.requests)
    logged = caplog.text + "".join(str(rec.__dict__) for rec in caplog.records)
    assert caplog.records and not _leaks(logged), _leaks(logged)


def test_success_and_auth_failures_never_leak_secrets(
    upstream: tuple[FaultServer, Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fs, up = upstream
    up.fn = lambda req: good_reply(req.json)
    with live_server(_service(fs)) as url, httpx.Client(base_url=url, timeout=30) as c:
        body = {"query": "cats", "documents": DOCS, "ranker": "first", "return_documents": True}
        r = c.post("/v1/rerank", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and len(r.json()["results"]) == 3
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"}):
            r = c.post("/v1/rerank", json=body, headers=headers)
            assert r.status_code == 401 and not _leaks(r.text) and not _leaks(str(r.headers))
        health = c.get("/healthz").text + c.get("/metrics").text + c.get("/openapi.json").text
        assert not _leaks(health)
    logged = caplog.text + "".join(str(rec.__dict__) for rec in caplog.records)
    assert not _leaks(logged)
    assert API_KEY not in repr(OpenAIEngine("m", base_url=fs.base_url, api_key=API_KEY))


# ----------------------------------------------------------------------------- auth everywhere


class _Decomposer:
    async def adecompose(self, question: str) -> Any:
        return SimpleNamespace(sub_questions=[question])


async def _asker(question: str, *, top_k: int) -> AskOutcome:
    doc = Document(id="1", text="an answer")
    return AskOutcome(answer="an answer", citations=[doc], evidence=[doc])


_BODIES = {
    "/v1/rerank": {"query": "q", "documents": ["a", "b"]},
    "/v1/decompose": {"question": "who and where?"},
    "/v1/ask": {"question": "who?"},
    "/v2/rerank": {"query": "q", "documents": ["a", "b"]},
}


def test_auth_is_enforced_on_every_v1_route() -> None:
    app = create_app(ServerSettings(api_token=TOKEN), decomposer=_Decomposer(), asker=_asker)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        schema = c.get("/openapi.json").json()
        v1 = sorted(p for p in schema["paths"] if p.startswith(("/v1", "/v2")))
        assert v1 == sorted(_BODIES), v1  # every /v1 and /v2 route is covered below
        for path in v1:
            methods = set(schema["paths"][path])
            assert methods == {"post"} and schema["paths"][path]["post"].get("security"), path
            for headers in (
                {},
                {"Authorization": "Bearer"},
                {"Authorization": "Bearer wrong-token"},
                {"Authorization": TOKEN},
                {"Authorization": f"Basic {TOKEN}"},
                {"X-API-Key": TOKEN},
            ):
                r = c.post(path, json=_BODIES[path], headers=headers)
                assert r.status_code == 401, (path, headers, r.status_code)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert r.json()["error"]["type"] in ("unauthorized", "http_error")
            # a bad body without a token is still 401: auth comes before validation
            assert c.post(path, content=b"{", headers={"Content-Type": "application/json"}).status_code == 401
            ok = c.post(path, json=_BODIES[path], headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200, (path, ok.text)
            assert c.get(path).status_code in (401, 405)  # no other method opens the route
        assert c.get("/healthz").status_code == 200  # ops routes stay open


# ----------------------------------------------------------------------------- load


def _load_test_module() -> ModuleType:
    path = ROOT / "benchmarks" / "load_test.py"
    spec = importlib.util.spec_from_file_location("hoprank_load_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hoprank_load_test"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(240)
def test_bounded_load_on_the_identity_ranker(
    datasets_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """200 requests of 20 real DL19 passages, 16 in flight, against ``hoprank serve``."""
    load_test = _load_test_module()
    argv = [
        "--start-server",
        "--ranker",
        "identity",
        "--requests",
        "200",
        "--concurrency",
        "16",
        "--time-limit",
        "120",
        "--server-concurrency",
        "16",
        "--server-queue",
        "64",
        "--data",
        str(datasets_dir / "trec-dl-2019-passage"),
        "--json",
    ]
    assert load_test.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (tmp_path / "load.json").write_text(json.dumps(report))
    with capsys.disabled():
        lat = report["latency_ok_s"]
        print(
            f"\n[load] {report['requests_sent']} requests, concurrency {report['concurrency']}: "
            f"{report['throughput_rps']} req/s, p50 {lat['p50']} s, p99 {lat['p99']} s, "
            f"status {report['status_counts']}"
        )
    assert report["requests_sent"] == 200 and not report["stopped_by_time_limit"]
    assert report["status_counts"] == {"200": 200}  # no 5xx, no 429 below the configured limits
    assert report["docs_per_request"] == 20
    assert report["latency_ok_s"]["p99"] < 30
