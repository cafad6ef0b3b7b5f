"""ICR on TREC DL19 passage, BM25 top-k: quality and speed (prefix pass vs calibration pass).

    .venv/bin/python benchmarks/icr_dl19.py --model qwen2.5-coder-0.5b --depth 20 --limit 3

Prints one line per query and a JSON summary: nDCG@10 of BM25 and of ICR over the
same queries, seconds per query, and the mean time of the prefix pass (chat header +
passages, encoded once), the query pass and the "N/A" calibration pass (each encodes
only the query side on the prefix's KV cache).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "datasets" / "trec-dl-2019-passage"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--limit", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--mask-outliers", action="store_true")
    ap.add_argument("--no-calibrate", action="store_true")
    ap.add_argument("--best-first", action="store_true", help="show the best BM25 passage first")
    ap.add_argument("--out", type=Path, default=None, help="write the summary JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import pytrec_eval

    from hoprank.llm.engines.transformers_engine import TransformersEngine
    from hoprank.rankers.icr import ICRRanker
    from hoprank.types import Document

    with open(args.data / "corpus.jsonl", encoding="utf-8") as f:
        corpus = {r["id"]: r for r in map(json.loads, f)}
    with open(args.data / "queries.jsonl", encoding="utf-8") as f:
        queries = {r["id"]: r["text"] for r in map(json.loads, f)}
    qrels: dict[str, dict[str, int]] = {}
    with open(args.data / "qrels.tsv", encoding="utf-8") as f:
        for line in f:
            q, d, rel = line.split("\t")
            qrels.setdefault(q, {})[d] = int(rel)
    run: dict[str, list[str]] = {}
    with open(args.data / "run.bm25.tsv", encoding="utf-8") as f:
        for line in f:
            q, d, *_ = line.split("\t")
            run.setdefault(q, []).append(d)
    qids = [q for q in queries if q in run and q in qrels][: args.limit]

    engine = TransformersEngine(args.model, threads=args.threads, dtype=args.dtype)
    ranker = ICRRanker(
        engine,
        calibrate=not args.no_calibrate,
        mask_outliers=args.mask_outliers,
        best_near_query=not args.best_first,
    )
    bm25_run: dict[str, dict[str, float]] = {}
    icr_run: dict[str, dict[str, float]] = {}
    per_query: list[dict[str, Any]] = []
    for qid in qids:
        ids = run[qid][: args.depth]
        docs = [Document(id=d, text=corpus[d]["text"], title=corpus[d].get("title") or None) for d in ids]
        t0 = time.perf_counter()
        ranking = ranker.rank(queries[qid], docs)
        seconds = time.perf_counter() - t0
        bm25_run[qid] = {d: float(len(ids) - i) for i, d in enumerate(ids)}
        icr_run[qid] = {d: float(len(ids) - i) for i, d in enumerate(ranking.ids)}
        steps = ranking.trace
        row = {
            "qid": qid,
            "seconds": seconds,
            "prefix_tokens": sum(s.input["prefix_tokens"] for s in steps),
            "suffix_tokens": [s.input["suffix_tokens_encoded"] for s in steps],
            "prefix_s": sum(s.output["prefix_seconds"] for s in steps),
            "query_s": sum(s.output["suffix_seconds"][0] for s in steps),
            "calib_s": sum(s.output["suffix_seconds"][-1] for s in steps) if ranker.calibrate else 0.0,
        }
        per_query.append(row)
        print(json.dumps(row), flush=True)

    ev = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in qids}, {"ndcg_cut.10"})
    bm25 = statistics.mean(v["ndcg_cut_10"] for v in ev.evaluate(bm25_run).values())
    icr = statistics.mean(v["ndcg_cut_10"] for v in ev.evaluate(icr_run).values())
    mean = {
        k: statistics.mean(r[k] for r in per_query) for k in ("seconds", "prefix_s", "query_s", "calib_s")
    }
    summary = {
        "model": args.model,
        "engine": engine.describe(),
        "ranker": ranker.describe(),
        "queries": len(qids),
        "depth": args.depth,
        "ndcg@10_bm25": bm25,
        "ndcg@10_icr": icr,
        "seconds_per_query": mean["seconds"],
        "prefix_pass_s": mean["prefix_s"],
        "query_pass_s": mean["query_s"],
        "calibration_pass_s": mean["calib_s"],
        "calibration_over_first_pass": mean["calib_s"] / (mean["prefix_s"] + mean["query_s"]),
        "prefix_tokens": statistics.mean(r["prefix_tokens"] for r in per_query),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "per_query": per_query}, indent=2))


if __name__ == "__main__":
    main()
