"""Rerankers side by side on TREC DL19 (BM25 top-depth) or HotpotQA distractors.

Loads the first stage, runs every ranker on every query (one engine, loaded once),
prints a markdown table and writes one JSON line per (ranker, query).

DL19: nDCG@10 (pytrec_eval, graded qrels) of the reranked BM25 top-``depth``.
HotpotQA (``--dataset hotpotqa``): the 10 given paragraphs of each of the first 100
questions (``run.distractor.tsv`` order); MRR@10 and Recall@2 of the supporting
paragraphs.

Ranker specs are ``name`` or ``name:key=value:key=value`` (values parsed as JSON when
they can be), e.g. ``first:calibrate=true:shifts=2`` or ``rankgpt:prompt="rankgpt-short"``.

Examples::

    .venv/bin/python benchmarks/rerank_dl19.py --model qwen2.5-coder-1.5b \\
        --rankers identity,pointwise,rankgpt,first,icr --depth 20
    .venv/bin/python benchmarks/rerank_dl19.py --model smollm2-135m --limit 2   # smoke
    .venv/bin/python benchmarks/rerank_dl19.py --dataset hotpotqa --limit 100 --rankers identity,first
    .venv/bin/python benchmarks/rerank_dl19.py --engine openai --model qwen \\
        --base-url http://127.0.0.1:8080/v1 --server llamacpp --rankers rankgpt
    .venv/bin/python benchmarks/rerank_dl19.py --engine llamacpp --model qwen2.5-coder-1.5b \\
        --rankers first,rankgpt      # starts llama.cpp on 127.0.0.1 for the pack's GGUF
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._engines import add_engine_args, open_engine  # noqa: E402
from hoprank.rankers import make_ranker  # noqa: E402
from hoprank.types import Document, Ranking  # noqa: E402

DATASETS = Path(os.environ.get("HOPRANK_SHARED", ROOT.parent / "shared")) / "datasets"
logger = logging.getLogger("rerank_bench")


# ----------------------------------------------------------------------------- data


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _run(path: Path) -> dict[str, list[tuple[int, str, float]]]:
    run: dict[str, list[tuple[int, str, float]]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            qid, did, rank, score = line.rstrip("\n").split("\t")
            run.setdefault(qid, []).append((int(rank), did, float(score)))
    return {q: sorted(v) for q, v in run.items()}


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            qid, did, rel = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(rel)
    return qrels


def load(
    dataset: str, depth: int, limit: int | None
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Items ``{"qid", "query", "docs"}`` and the qrels."""
    if dataset == "dl19":
        folder, run_file, default_limit = DATASETS / "trec-dl-2019-passage", "run.bm25.tsv", None
    elif dataset == "hotpotqa":
        folder, run_file, default_limit = DATASETS / "hotpotqa-dev-distractor-500", "run.distractor.tsv", 100
        depth = 10
    else:
        raise SystemExit(f"unknown dataset {dataset!r}")
    queries = _jsonl(folder / "queries.jsonl")
    run = _run(folder / run_file)
    qrels = _qrels(folder / "qrels.tsv")
    n = limit if limit is not None else default_limit
    queries = [q for q in queries if q["id"] in run][: n if n is not None else len(queries)]
    wanted = {did for q in queries for _, did, _ in run[q["id"]][:depth]}
    corpus = {r["id"]: r for r in _jsonl(folder / "corpus.jsonl") if r["id"] in wanted}
    items = []
    for q in queries:
        docs = [
            Document(id=did, text=corpus[did]["text"], title=corpus[did].get("title") or None, score=s)
            for _, did, s in run[q["id"]][:depth]
        ]
        if dataset == "hotpotqa":  # supporting paragraphs from the question itself
            qrels[q["id"]] = {d: 1 for d in q.get("supporting", [])}
        items.append({"qid": q["id"], "query": q["text"], "docs": docs})
    return items, qrels


# ----------------------------------------------------------------------------- metrics


def ndcg10(qid: str, ranking: Ranking, qrels: dict[str, dict[str, int]]) -> float:
    import pytrec_eval

    run = {qid: {d.id: float(len(ranking.documents) - i) for i, d in enumerate(ranking.documents)}}
    ev = pytrec_eval.RelevanceEvaluator({qid: qrels.get(qid, {})}, {"ndcg_cut.10"})
    return float(ev.evaluate(run)[qid]["ndcg_cut_10"])


def hotpot_metrics(qid: str, ranking: Ranking, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    gold = {d for d, r in qrels.get(qid, {}).items() if r > 0}
    ids = ranking.ids
    mrr = next((1.0 / (i + 1) for i, d in enumerate(ids[:10]) if d in gold), 0.0)
    recall2 = len(gold & set(ids[:2])) / len(gold) if gold else 0.0
    return {"mrr@10": mrr, "recall@2": recall2}


# ----------------------------------------------------------------------------- engines, rankers


def parse_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``name:key=value:...`` -> (label, name, params)."""
    name, *pairs = spec.split(":")
    params: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return spec, name, params


async def run_ranker(
    label: str,
    ranker: Any,
    items: list[dict[str, Any]],
    qrels: dict[str, dict[str, int]],
    dataset: str,
    out: Any,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        t0 = time.perf_counter()
        ranking: Ranking = await ranker.arank(item["query"], item["docs"])
        seconds = time.perf_counter() - t0
        if dataset == "dl19":
            metrics = {"ndcg@10": ndcg10(item["qid"], ranking, qrels)}
        else:
            metrics = hotpot_metrics(item["qid"], ranking, qrels)
        row = {
            "dataset": dataset,
            "ranker": label,
            "qid": item["qid"],
            "query": item["query"],
            "ranked": ranking.ids,
            **metrics,
            "seconds": seconds,
            "prompt_tokens": ranking.usage.prompt_tokens,
            "completion_tokens": ranking.usage.completion_tokens,
            "llm_calls": ranking.usage.llm_calls,
            "fallbacks": ranking.fallbacks,
            # per window: the label scores a listwise ranker read (FIRST), for offline analysis
            "label_scores": [s.output["scores"] for s in ranking.trace if s.name == "first"],
        }
        out.write(json.dumps(row) + "\n")
        out.flush()
        rows.append(row)
        logger.info("%s %d/%d %s %s %.1fs", label, i + 1, len(items), item["qid"], metrics, seconds)
    keys = ["ndcg@10"] if dataset == "dl19" else ["mrr@10", "recall@2"]
    summary: dict[str, Any] = {k: statistics.fmean(r[k] for r in rows) for k in keys}
    for k in ("seconds", "prompt_tokens", "llm_calls"):
        summary[k] = statistics.fmean(r[k] for r in rows)
    summary["fallbacks"] = sum(r["fallbacks"] for r in rows)
    return summary


def table(results: dict[str, dict[str, Any]], dataset: str, n: int) -> str:
    keys = ["ndcg@10"] if dataset == "dl19" else ["mrr@10", "recall@2"]
    head = ["ranker", *keys, "s/query", "prompt tok/query", "LLM calls/query", "fallback windows"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, s in results.items():
        cells = [
            label,
            *[f"{s[k]:.4f}" for k in keys],
            f"{s['seconds']:.2f}",
            f"{s['prompt_tokens']:.0f}",
            f"{s['llm_calls']:.1f}",
            str(s["fallbacks"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return f"{dataset}, {n} queries\n\n" + "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    items, qrels = load(args.dataset, args.depth, args.limit)
    specs = [parse_spec(s.strip()) for s in args.rankers.split(",") if s.strip()]
    needs_engine = any(name not in ("identity", "cross-encoder") for _, name, _ in specs)
    with open_engine(args) if needs_engine else contextlib.nullcontext() as engine:
        await _run_all(args, specs, items, qrels, engine)


async def _run_all(
    args: argparse.Namespace,
    specs: list[tuple[str, str, dict[str, Any]]],
    items: list[dict[str, Any]],
    qrels: dict[str, dict[str, int]],
    engine: Any,
) -> None:
    out_path = Path(args.out or ROOT / "runs" / f"rerank_{args.dataset}_{Path(args.model).name}.jsonl")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    with open(out_path, "w", encoding="utf-8") as out:  # noqa: ASYNC230 - a script, one loop
        for label, name, params in specs:
            if name in ("rankgpt", "first", "icr") and args.window and "window" not in params:
                params.setdefault("window", args.window)
            uses_engine = name not in ("identity", "cross-encoder")
            ranker = make_ranker(name, engine if uses_engine else None, **params)
            results[label] = await run_ranker(label, ranker, items, qrels, args.dataset, out)
    print(table(results, args.dataset, len(items)))
    if engine is not None and hasattr(engine, "describe"):
        print(f"\nengine: {json.dumps(engine.describe(), default=str)}")
    print(f"per-query rows: {out_path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["dl19", "hotpotqa"], default="dl19")
    ap.add_argument("--rankers", default="identity,pointwise,rankgpt,first,icr")
    add_engine_args(ap)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--window", type=int, default=None, help="window for listwise rankers (default 20)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument(
        "--out", default=None, help="per-query JSONL (default runs/rerank_<dataset>_<model>.jsonl)"
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
