"""The HTTP service over a real uvicorn on 127.0.0.1: shapes, auth, limits, errors, metrics.

Control-flow tests use small in-test rankers and the ScriptedEngine; the real-model
round trip lives in test_server_real.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from _live_server import live_server

from hoprank.errors import CapabilityMissing, EngineError, InvalidInput, RateLimited
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.server import ServerSettings, create_app
from hoprank.server.logs import JsonFormatter, RedactingFilter, Redactor
from hoprank.types import Document

TOKEN = "tok-3f9a1c77e2b84d0f9a61"
SECRET_KEY = "sk-live1234567890abcdef"


class OverlapRanker(BaseRanker):
    """Scores each document by query-word overlap (monotone scores)."""

    name = "overlap"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        if self.delay:
            await asyncio.sleep(self.delay)
        words = set(query.lower().split())
        scored = [d.with_score(float(len(words & set(d.text.lower().split())))) for d in docs]
        scored.sort(key=lambda d: -(d.score or 0.0))
        return RankerOutput(scored)


class ReverseRanker(BaseRanker):
    """Reverses the input order, no scores."""

    name = "reverse"

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        return RankerOutput(list(reversed(docs)))


class RaisingRanker(BaseRanker):
    name = "raising"

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        raise self.exc


@contextmanager
def serve(settings: ServerSettings | None = None, **kwargs: Any) -> Iterator[httpx.Client]:
    app = create_app(settings or ServerSettings(), **kwargs)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def dl19(datasets_dir: Path) -> tuple[str, list[dict[str, str]]]:
    """The first DL19 query and its BM25 top-8 passages (real data)."""
    d = datasets_dir / "trec-dl-2019-passage"
    qid, query = next(
        (r["id"], r["text"]) for r in map(json.loads, (d / "queries.jsonl").open(encoding="utf-8"))
    )
    ids = [line.split("\t")[1] for line in (d / "run.bm25.tsv").open() if line.startswith(qid + "\t")][:8]
    corpus = {}
    for line in (d / "corpus.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        if r["id"] in ids:
            corpus[r["id"]] = r
    return query, [{"id": i, "text": corpus[i]["text"]} for i in ids]


def test_rerank_identity_round_trip_on_dl19(dl19: tuple[str, list[dict[str, str]]]) -> None:
    query, docs = dl19
    # A real Identity ranker from hoprank.rankers.make_ranker (no injection).
    with serve() as c:
        body = {
            "query": query,
            "documents": [docs[0]["text"], *docs[1:]],
            "top_n": 5,
            "return_documents": True,
        }
        r = c.post("/v1/rerank", json=body, headers={"X-Request-ID": "req-1"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["id"] == "req-1" and r.headers["x-request-id"] == "req-1"
        assert out["meta"]["ranker"] == "identity"
        assert [x["index"] for x in out["results"]] == [0, 1, 2, 3, 4]
        assert out["results"][1]["document"] == {"text": docs[1]["text"], "id": docs[1]["id"]}
        assert "id" not in out["results"][0]["document"]  # given as a plain string
        scores = [x["relevance_score"] for x in out["results"]]
        assert scores == [1.0, 0.5, pytest.approx(1 / 3), 0.25, 0.2]
        assert out["meta"]["score_kind"] == "rank"
        # return_documents defaults to false (Cohere)
        r = c.post("/v1/rerank", json={"query": query, "documents": [d["text"] for d in docs]})
        assert r.status_code == 200 and all("document" not in x for x in r.json()["results"])
        assert len(r.json()["results"]) == len(docs)


def test_rerank_scores_and_ranker_selection() -> None:
    rankers = {"overlap": OverlapRanker(), "reverse": ReverseRanker()}
    settings = ServerSettings(rankers=("identity", "first", "overlap", "reverse"))
    docs = ["cats purr", "dogs bark loudly at cats", "the stock market", "dogs and cats and birds"]
    with serve(settings, rankers=rankers) as c:
        r = c.post("/v1/rerank", json={"query": "dogs cats", "documents": docs, "ranker": "overlap"})
        out = r.json()
        # overlap counts are no probability: 1/rank, in [0, 1]
        assert r.status_code == 200 and out["meta"]["score_kind"] == "rank"
        assert [x["index"] for x in out["results"]][-1] == 2
        scores = [x["relevance_score"] for x in out["results"]]
        assert scores == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
        # ``model`` naming a ranker selects it (Cohere clients always send a model)
        r = c.post("/v1/rerank", json={"model": "hoprank-reverse", "query": "q", "documents": docs})
        assert [x["index"] for x in r.json()["results"]] == [3, 2, 1, 0]
        assert r.json()["meta"]["ranker"] == "reverse" and r.json()["model"] == "hoprank-reverse"
        # an unrelated model name is informational; the default ranker runs
        r = c.post("/v1/rerank", json={"model": "rerank-english-v3.0", "query": "q", "documents": docs})
        assert r.json()["meta"]["ranker"] == "identity"
        assert r.json()["model"] == "hoprank-identity"  # the served model, not the one sent
        r = c.post("/v1/rerank", json={"query": "q", "documents": docs, "ranker": "nope"})
        assert r.status_code == 422 and "unknown ranker" in r.json()["error"]["message"]
        # empty documents: a defined empty result, no model work
        r = c.post("/v1/rerank", json={"query": "q", "documents": []})
        assert r.status_code == 200 and r.json()["results"] == []
        # a ranker that needs a model, on a server without one
        r = c.post("/v1/rerank", json={"query": "q", "documents": docs, "ranker": "first"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "capability_missing"


def test_auth_and_secrets_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = ServerSettings(api_token=TOKEN)
    boom = RuntimeError(f"upstream said: bad key {SECRET_KEY} with Bearer {TOKEN}")
    with serve(settings, rankers={"identity": RaisingRanker(boom)}) as c:
        body = {"query": "q", "documents": ["a", "b"]}
        r = c.post("/v1/rerank", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = c.post("/v1/rerank", json=body, headers={"Authorization": "Bearer wrong-token-123456"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        assert "wrong-token-123456" not in r.text
        r = c.post("/v1/rerank", json=body, headers={"Authorization": f"Basic {TOKEN}"})
        assert r.status_code == 401
        assert c.get("/healthz").status_code == 200  # open
        r = c.post("/v1/rerank", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 500
        err = r.json()["error"]
        assert err["type"] == "internal_error" and err["message"] == "internal server error"
        assert TOKEN not in r.text and SECRET_KEY not in r.text and "Traceback" not in r.text
        schema = c.get("/openapi.json").json()
        assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert caplog.records, "the server logs requests"
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert TOKEN not in logged and SECRET_KEY not in logged


def test_error_mapping() -> None:
    cases: list[tuple[BaseException, int, str]] = [
        (EngineError("backend exploded", status_code=500), 502, "engine_error"),
        (RateLimited("slow down", retry_after=7.2), 503, "upstream_rate_limited"),
        (CapabilityMissing("attention", "openai:x", "ICR needs attention"), 400, "capability_missing"),
        (InvalidInput("bad thing"), 422, "invalid_input"),
    ]
    rankers = {f"r{i}": RaisingRanker(exc) for i, (exc, _, _) in enumerate(cases)}
    with serve(ServerSettings(rankers=("identity", *rankers)), rankers=rankers) as c:
        for i, (_, status, kind) in enumerate(cases):
            r = c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"], "ranker": f"r{i}"})
            assert r.status_code == status, (kind, r.text)
            assert r.json()["error"]["type"] == kind
            if status == 503:
                assert r.headers["retry-after"] == "8"
        r = c.get("/no/such/route")
        assert r.status_code == 404 and r.json()["error"]["type"] == "http_error"


def test_limits() -> None:
    settings = ServerSettings(max_body_bytes=4096, max_documents=3, max_document_chars=50, max_query_chars=20)
    with serve(settings) as c:
        r = c.post(
            "/v1/rerank", json={"query": "q", "documents": ["x" * 5000]}, headers={"X-Request-ID": "big-1"}
        )
        assert r.status_code == 413 and r.json()["error"]["details"]["limit"] == "max_body_bytes"
        assert r.json()["request_id"] == "big-1" and r.headers["x-request-id"] == "big-1"

        def chunks() -> Iterator[bytes]:  # no Content-Length: streamed body
            yield b'{"query": "q", "documents": ["'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"]}'

        r = c.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["request_id"] == r.headers["x-request-id"]
        for body, limit in [
            ({"query": "q", "documents": ["a", "b", "c", "d"]}, "max_documents"),
            ({"query": "q", "documents": ["a", "z" * 51]}, "max_document_chars"),
            ({"query": "w" * 21, "documents": ["a"]}, "max_query_chars"),
        ]:
            r = c.post("/v1/rerank", json=body)
            assert r.status_code == 422, r.text
            err = r.json()["error"]
            assert err["type"] == "limit_exceeded" and err["details"]["limit"] == limit
            assert limit in err["message"]
        r = c.post("/v1/rerank", json={"query": "  ", "documents": ["a"]})
        assert r.status_code == 422 and "query" in r.json()["error"]["message"]
        r = c.post("/v1/rerank", json={"query": "q", "documents": [{"title": "no text"}], "top_n": 0})
        assert r.status_code == 422 and r.json()["error"]["type"] == "validation_error"
        assert "no text" not in r.text  # validation errors never echo the input
        r = c.post("/v1/rerank", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422


def test_bounded_concurrency_rejects_fast_never_hangs() -> None:
    settings = ServerSettings(max_concurrency=1, max_queue=1, retry_after_s=2, request_timeout_s=20)
    slow = OverlapRanker(delay=1.5)
    with serve(settings, rankers={"identity": slow}) as c:

        def call(_: int) -> tuple[int, float, str | None]:
            t0 = time.perf_counter()
            r = c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
            return r.status_code, time.perf_counter() - t0, r.headers.get("retry-after")

        t0 = time.perf_counter()
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(call, range(6)))
        total = time.perf_counter() - t0
        statuses = sorted(s for s, _, _ in results)
        assert statuses == [200, 200, 429, 429, 429, 429], results
        rejected = [(t, ra) for s, t, ra in results if s == 429]
        assert all(t < 1.0 and ra == "2" for t, ra in rejected), rejected
        assert total < 6.0  # two slow requests in series, never a hang
        metrics = c.get("/metrics").text
        assert 'hoprank_http_requests_total{method="POST",route="/v1/rerank",status="429"} 4.0' in metrics


def test_request_timeout_504() -> None:
    settings = ServerSettings(request_timeout_s=0.3)
    with serve(settings, rankers={"identity": OverlapRanker(delay=3.0)}) as c:
        t0 = time.perf_counter()
        r = c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
        assert time.perf_counter() - t0 < 2.0
        # the slot was released: the next request is admitted (and times out again)
        assert c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]}).status_code == 504


def test_metrics_and_health() -> None:
    with serve() as c:
        for _ in range(3):
            assert c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]}).status_code == 200
        c.post("/v1/rerank", json={"query": "q"})
        health = c.get("/healthz").json()
        assert health["status"] == "ok" and health["default_ranker"] == "identity" and not health["ask"]
        text = c.get("/metrics").text
        assert 'hoprank_http_requests_total{method="POST",route="/v1/rerank",status="200"} 3.0' in text
        assert 'hoprank_http_requests_total{method="POST",route="/v1/rerank",status="422"} 1.0' in text
        assert 'hoprank_http_request_duration_seconds_count{method="POST",route="/v1/rerank"} 4.0' in text
        assert "hoprank_http_requests_in_flight 1.0" in text  # the /metrics request itself
        assert 'hoprank_rerank_documents_total{ranker="identity"} 6.0' in text
        assert c.get("/docs").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
        assert "/v1/rerank" in paths and "/v1/decompose" not in paths and "/v1/ask" not in paths


def _scripted(messages: Any) -> str:
    text = "\n".join(m["content"] for m in messages)
    if "Passages:" in text:  # the answer prompt: cite the first passage shown
        first = re.search(r"hpdev-\d+", text)
        return f"Shirley Temple held the post of Chief of Protocol [{first.group(0) if first else '?'}]."
    return '"Who portrayed Corliss Archer in the film Kiss and Tell?", "What government position was held by Shirley Temple?"]}'


def test_decompose_and_ask_over_a_real_bm25_index(datasets_dir: Path, tmp_path: Path) -> None:
    from hoprank.tools.bm25 import BM25Retriever

    d = datasets_dir / "hotpotqa-dev-distractor-500"
    BM25Retriever.from_jsonl(d / "corpus.jsonl").save(tmp_path / "idx")
    question = next(map(json.loads, (d / "queries.jsonl").open(encoding="utf-8")))["text"]
    settings = ServerSettings(index_dir=tmp_path / "idx")
    with serve(settings, engine=ScriptedEngine(_scripted)) as c:
        r = c.post("/v1/decompose", json={"question": question})
        assert r.status_code == 200, r.text
        assert r.json()["sub_questions"][1] == "What government position was held by Shirley Temple?"
        r = c.post("/v1/ask", json={"question": question, "top_k": 5})
        assert r.status_code == 200, r.text
        out = r.json()
        assert "Chief of Protocol" in out["answer"] and len(out["evidence"]) == 5
        titles = [e["title"] for e in out["evidence"]]
        assert any("Corliss Archer" in t or "Kiss and Tell" in t for t in titles), titles
        assert [x["id"] for x in out["citations"]] == [out["evidence"][0]["id"]]
        assert out["usage"]["llm_calls"] == 2
        assert c.get("/healthz").json()["ask"] is True
        r = c.post("/v1/ask", json={"question": question, "top_k": 500})
        assert r.status_code == 422 and r.json()["error"]["details"]["limit"] == "max_top_k"


def test_redactor_and_json_logs() -> None:
    red = Redactor([TOKEN])
    text = f"key={SECRET_KEY} auth: Bearer abc123def456 token {TOKEN} api_key: 'zzz' total_tokens: 5"
    out = red(text)
    assert SECRET_KEY not in out and "abc123def456" not in out and TOKEN not in out and "zzz" not in out
    assert "total_tokens: 5" in out and red("missing bearer token") == "missing bearer token"
    record = logging.LogRecord("hoprank.server", logging.ERROR, __file__, 1, "failed %s", (TOKEN,), None)
    record.status = 502
    assert RedactingFilter(red).filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed [REDACTED]" and line["status"] == 502 and line["level"] == "error"
