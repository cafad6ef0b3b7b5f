"""The service with a REAL model: SmolLM2-135M loaded once at startup, FIRST and
pointwise rerankers over real DL19 passages, called over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from _live_server import live_server

from hoprank.rankers import make_ranker
from hoprank.server import ServerSettings, create_app
from hoprank.types import Document


def _dl19(datasets_dir: Path, n: int) -> tuple[str, list[dict[str, str]]]:
    d = datasets_dir / "trec-dl-2019-passage"
    qid, query = next(
        (r["id"], r["text"]) for r in map(json.loads, (d / "queries.jsonl").open(encoding="utf-8"))
    )
    ids = [line.split("\t")[1] for line in (d / "run.bm25.tsv").open() if line.startswith(qid + "\t")][:n]
    texts = {}
    for line in (d / "corpus.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        if r["id"] in ids:
            texts[r["id"]] = r["text"]
    return query, [{"id": i, "text": texts[i]} for i in ids]


def test_round_trip_with_smollm2(datasets_dir: Path, tmp_path: Path) -> None:
    from hoprank.tools.bm25 import BM25Retriever

    query, docs = _dl19(datasets_dir, 6)
    hotpot = datasets_dir / "hotpotqa-dev-distractor-500"
    BM25Retriever.from_jsonl(hotpot / "corpus.jsonl").save(tmp_path / "idx")
    question = next(map(json.loads, (hotpot / "queries.jsonl").open(encoding="utf-8")))["text"]
    params = {"first": {"max_passage_tokens": 60}, "pointwise": {"max_passage_tokens": 60}}
    settings = ServerSettings(
        model="smollm2-135m",
        engine_options={"threads": 2},
        ranker_params=params,
        index_dir=tmp_path / "idx",
        default_ranker="identity",  # /v1/ask: decompose + BM25 + answer (FIRST is covered above)
        answer_max_tokens=48,
        request_timeout_s=600,  # a shared CPU can be slow; this test is about the wiring
    )
    app = create_app(settings)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=300) as c:
        engine = app.state.hoprank.engine
        assert engine is not None and c.get("/healthz").json()["model"] == "smollm2-135m"
        body = {"model": "hoprank-first", "query": query, "documents": docs, "return_documents": True}
        r = c.post("/v1/rerank", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["meta"]["ranker"] == "first"
        indices = [x["index"] for x in out["results"]]
        assert sorted(indices) == list(range(len(docs)))
        for x in out["results"]:
            assert x["document"]["id"] == docs[x["index"]]["id"]
        scores = [x["relevance_score"] for x in out["results"]]
        assert scores == sorted(scores, reverse=True)
        usage = out["meta"]["usage"]
        assert usage["llm_calls"] >= 1 and usage["prompt_tokens"] > 100

        # The server's order is the ranker's order on the same engine (indices map back).
        direct = make_ranker("first", engine=engine, max_passage_tokens=60).rank(
            query, [Document(id=d["id"], text=d["text"]) for d in docs]
        )
        assert [docs[i]["id"] for i in indices] == direct.ids

        # pointwise on the same shared engine: the ranker's own scores are reported.
        body = {"query": query, "documents": docs[:4], "ranker": "pointwise", "top_n": 3}
        r = c.post("/v1/rerank", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["meta"]["score_kind"] == "probability" and len(out["results"]) == 3
        probs = [x["relevance_score"] for x in out["results"]]
        assert all(0.0 <= p <= 1.0 for p in probs) and probs == sorted(probs, reverse=True)
        assert out["meta"]["usage"]["llm_calls"] == 4

        # decompose and ask on the same engine, over a real BM25 index of HotpotQA passages
        r = c.post("/v1/decompose", json={"question": question})
        assert r.status_code == 200, r.text
        subs = r.json()["sub_questions"]
        assert subs and all(isinstance(q, str) and q.strip() for q in subs)
        assert r.json()["usage"]["llm_calls"] >= 1
        r = c.post("/v1/ask", json={"question": question, "top_k": 3})
        assert r.status_code == 200, r.text
        out = r.json()
        assert len(out["evidence"]) == 3 and all(e["id"].startswith("hpdev-") for e in out["evidence"])
        assert {x["id"] for x in out["citations"]} <= {e["id"] for e in out["evidence"]}
        assert out["usage"]["llm_calls"] >= 2  # decompose + answer
        assert app.state.hoprank.engine is engine  # loaded once, shared
