"""First-stage retrieval on HotpotQA dev (distractor, 500 questions), full pool.

Indexes all 4,858 paragraphs (title + text) and asks the 500 questions. Gold = the two
``supporting`` paragraphs of each question. Reports, per retriever:

* R@k (both): share of questions with BOTH supporting paragraphs in the top k
  (k = 2, 5, 10, 20);
* MRR@10: reciprocal rank of the first supporting paragraph within the top 10;
* build seconds (index construction; dense = corpus encoding) and queries/second
  (``search_many``, query encoding included).

Retrievers: BM25 (bm25s, English stemming + stopwords), dense (all-MiniLM-L6-v2,
exact numpy search), hybrid (RRF of the two, k=60, depth 100), Milvus Lite dense (same
vectors, FLAT/IP) with its top-10 agreement with the dense retriever, and Milvus Lite
full-text BM25.

    .venv/bin/python benchmarks/retrieval_hotpotqa.py                   # full run
    .venv/bin/python benchmarks/retrieval_hotpotqa.py --limit 3 --pool candidates   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hoprank.tools import (
    BaseRetriever,
    BM25Retriever,
    DenseRetriever,
    Embedder,
    HybridRetriever,
    MilvusRetriever,
    load_corpus,
)
from hoprank.types import Document

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = (
    Path(os.environ.get("HOPRANK_SHARED", ROOT.parent / "shared"))
    / "datasets"
    / "hotpotqa-dev-distractor-500"
)
KS = (2, 5, 10, 20)


def metrics(results: list[list[Document]], gold: list[set[str]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in KS:
        out[f"R@{k}"] = sum(g <= {d.id for d in r[:k]} for r, g in zip(results, gold, strict=True)) / len(
            gold
        )
    rr = []
    for r, g in zip(results, gold, strict=True):
        rank = next((i for i, d in enumerate(r[:10], start=1) if d.id in g), None)
        rr.append(1.0 / rank if rank else 0.0)
    out["MRR@10"] = sum(rr) / len(rr)
    return out


def run_queries(r: BaseRetriever, texts: list[str], k: int) -> tuple[list[list[Document]], float]:
    t0 = time.perf_counter()
    res = asyncio.run(r.search_many(texts, k=k, concurrency=1))
    return res, time.perf_counter() - t0


def agreement(
    a: list[list[Document]], b: list[list[Document]], k: int = 10, tol: float = 1e-5
) -> dict[str, float]:
    exact = ties = 0
    for x, y in zip(a, b, strict=True):
        x, y = x[:k], y[:k]
        if [d.id for d in x] == [d.id for d in y]:
            exact += 1
            ties += 1
        elif len(x) == len(y) and all(
            p.id == q.id or abs((p.score or 0) - (q.score or 0)) < tol for p, q in zip(x, y, strict=True)
        ):
            ties += 1
    n = len(a)
    return {"identical": exact / n, "identical_up_to_ties": ties / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=None, help="first N questions only")
    ap.add_argument(
        "--pool",
        choices=["full", "candidates"],
        default="full",
        help="index all paragraphs or only the candidates",
    )
    ap.add_argument("--model", default=None, help="embedder folder (default: offline all-MiniLM-L6-v2)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--dense-cache", type=Path, default=None, help="reuse/save the dense index folder here")
    ap.add_argument("--skip-milvus", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    torch.set_num_threads(args.threads)

    with (args.data / "queries.jsonl").open(encoding="utf-8") as f:
        queries = [json.loads(line) for line in f][: args.limit]
    docs = load_corpus(args.data / "corpus.jsonl")
    if args.pool == "candidates":
        keep = {c for q in queries for c in q["candidates"]}
        docs = [d for d in docs if d.id in keep]
    texts = [q["text"] for q in queries]
    gold = [set(q["supporting"]) for q in queries]
    print(
        f"# HotpotQA dev distractor: {len(queries)} questions, {len(docs)} paragraphs indexed",
        file=sys.stderr,
    )

    rows: list[dict[str, Any]] = []
    results: dict[str, list[list[Document]]] = {}

    def record(name: str, r: BaseRetriever, build_s: float, note: str = "") -> None:
        res, secs = run_queries(r, texts, 20)
        results[name] = res
        rows.append(
            {
                "retriever": name,
                **metrics(res, gold),
                "build_s": build_s,
                "qps": len(texts) / secs,
                "note": note,
            }
        )
        print(f"  done {name}: {rows[-1]}", file=sys.stderr)

    t0 = time.perf_counter()
    bm25 = BM25Retriever.from_documents(docs)
    record("BM25 (bm25s)", bm25, time.perf_counter() - t0, "title+text, stem+stop")

    embedder = Embedder(args.model, batch_size=args.batch_size, dtype=args.dtype)
    note = f"{embedder.name} {args.dtype}, numpy exact"
    cache = args.dense_cache
    t0 = time.perf_counter()
    if cache is not None and (cache / "hoprank-index.json").is_file():
        dense = DenseRetriever.load(cache, embedder)
        note += " (loaded from cache: build time is load time)"
    else:
        dense = DenseRetriever.from_documents(docs, embedder, show_progress=sys.stderr.isatty())
        if cache is not None:
            dense.save(cache)
    record("Dense", dense, time.perf_counter() - t0, note)

    record("Hybrid RRF (BM25 + dense)", HybridRetriever([bm25, dense], depth=100), 0.0, "k=60, depth 100")

    if not args.skip_milvus:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            mv = MilvusRetriever(Path(tmp) / "bench.db", "hotpot", embedder=embedder)
            mv.index(dense.documents, embeddings=dense.embeddings)
            build = time.perf_counter() - t0
            record("Milvus Lite dense", mv, build, "insert of the dense vectors (no re-encoding)")
            agree = agreement(results["Dense"], results["Milvus Lite dense"])
            rows[-1]["note"] += (
                f"; top-10 vs Dense: identical {agree['identical']:.3f}, up to ties {agree['identical_up_to_ties']:.3f}"
            )
            rows[-1]["agreement"] = agree
            mb = MilvusRetriever(Path(tmp) / "bench.db", "hotpot", mode="bm25")
            record(
                "Milvus Lite BM25 (full text)",
                mb,
                0.0,
                "built with the dense collection; Milvus analyser, no stemming",
            )
            mb.close()
            mv.close()

    print(f"\n## First-stage retrieval, HotpotQA dev distractor ({len(queries)} q, {len(docs)} paragraphs)\n")
    print("| retriever | R@2 | R@5 | R@10 | R@20 | MRR@10 | build s | q/s | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['retriever']} | {r['R@2']:.3f} | {r['R@5']:.3f} | {r['R@10']:.3f} | {r['R@20']:.3f} | "
            f"{r['MRR@10']:.3f} | {r['build_s']:.1f} | {r['qps']:.1f} | {r['note']} |"
        )
    print("\nR@k = share of questions with BOTH supporting paragraphs in the top k.")
    if args.json:
        args.json.write_text(
            json.dumps({"questions": len(queries), "paragraphs": len(docs), "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
