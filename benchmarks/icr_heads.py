"""ICR with selected retrieval heads: record per-head scores, select, replay, check live.

    # 1. per-head ICR scores of calibration and evaluation queries (one model load; resumable)
    .venv/bin/python benchmarks/icr_heads.py record --model qwen2.5-coder-0.5b \
        --set hotpotqa-dev-distractor-500:distractor:100:130 --set trec-dl-2019-passage:bm25:0:43 \
        --set hotpotqa-dev-distractor-500:distractor:0:100 --out runs/heads/records.jsonl
    # 2. select k heads on the calibration sets only, save the selection under $HOPRANK_CACHE/heads
    .venv/bin/python benchmarks/icr_heads.py select --records runs/heads/records.jsonl \
        --calibration hotpotqa-dev-distractor-500:distractor:100:130 --name qwen05-hotpot
    # 3. nDCG@10 on the evaluation set: first stage, ICR (all heads), ICR (selected heads)
    .venv/bin/python benchmarks/icr_heads.py evaluate --records runs/heads/records.jsonl \
        --dataset trec-dl-2019-passage --selection qwen05-hotpot
    # 4. two-fold: heads chosen on one half of the set's queries score the other half
    .venv/bin/python benchmarks/icr_heads.py crossfit --records runs/heads/records.jsonl \
        --dataset trec-dl-2019-passage

A ``--set`` is ``FOLDER:RUN:START:END[:MAX_DOC_TOKENS]``: queries START..END-1 (in the
folder's queries.jsonl order, judged and with candidates) and their first ``--depth``
candidates of run RUN. Replayed scores are the sum of the selected heads' calibrated
scores, which is exactly what ``ICRRanker(heads=...)`` ranks by; ``check`` runs that
ranker live on a few queries, asserts the same order, and times it against PointwiseLLM
on the same queries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HOPRANK_SHARED", ROOT.parent / "shared")) / "datasets"


def _load(folder: str) -> Any:
    from hoprank.evals.dataset import load_common

    return load_common(SHARED / folder if not Path(folder).is_dir() else folder)


def _items(spec: str, depth: int) -> tuple[list[tuple[str, str, str, list[Any], dict[str, int]]], int | None]:
    parts = spec.split(":")
    folder, run_name, start, end = parts[0], parts[1], int(parts[2]), int(parts[3])
    max_tokens = int(parts[4]) if len(parts) > 4 else None
    ds = _load(folder)
    run = ds.run(run_name)
    qids = [q for q in ds.queries if q in run and ds.qrels.get(q)][start:end]
    name = Path(folder).name
    return [
        (name, q, ds.queries[q].text, ds.candidates(q, run, depth), ds.qrels[q]) for q in qids
    ], max_tokens


def _engine(args: argparse.Namespace) -> Any:
    import torch

    from hoprank.llm import load_engine

    torch.set_num_threads(args.threads)
    return load_engine(args.model)


def cmd_record(args: argparse.Namespace) -> None:
    from hoprank.rankers.heads import HeadRecord, read_records, write_records
    from hoprank.rankers.icr import ICRRanker

    engine = _engine(args)
    done = set()
    if args.out.is_file():
        done = {(r.dataset, r.qid) for r in read_records(args.out)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for spec in args.set:
        items, max_tokens = _items(spec, args.depth)
        ranker = ICRRanker(engine, max_doc_tokens=max_tokens or 300)
        for i, (dataset, qid, query, docs, qrels) in enumerate(items):
            if (dataset, qid) in done:
                continue
            t0 = time.perf_counter()
            scores = asyncio.run(ranker.head_scores(query, docs))
            sec = time.perf_counter() - t0
            rec = HeadRecord(
                dataset=dataset, qid=qid, doc_ids=[d.id for d in docs], qrels=qrels, scores=scores
            )
            write_records([rec], args.out)
            print(f"{dataset} {i + 1}/{len(items)} q={qid} {sec:.1f}s", flush=True)


def cmd_select(args: argparse.Namespace) -> None:
    from hoprank.rankers.heads import read_records, save_selection, select_from_records

    wanted: set[tuple[str, str]] = set()
    for spec in args.calibration:  # FOLDER:RUN:START:END, as in --set
        items, _ = _items(spec, args.depth)
        wanted |= {(it[0], it[1]) for it in items}
    records = [r for r in read_records(args.records) if (r.dataset, r.qid) in wanted]
    if not records:
        sys.exit(f"no records of {args.calibration} in {args.records}")
    sel = select_from_records(
        records, k=args.k, name=args.name, model=args.model_name, model_sha256=args.sha256
    )
    path = save_selection(sel, args.save)
    print(json.dumps(sel.model_dump(exclude={"head_ndcg"}), indent=1))
    print(f"saved {path}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from hoprank.evals.metrics import mrr_at
    from hoprank.rankers.heads import _order, load_selection, read_records

    records = [r for r in read_records(args.records) if r.dataset == args.dataset]
    if args.set:
        items, _ = _items(args.set, 20)
        wanted = {it[1] for it in items}
        records = [r for r in records if r.qid in wanted]
    heads: dict[str, Any] = {"first stage": "input", "ICR all heads": None}
    for name in args.selection:
        sel = load_selection(name)
        heads[f"ICR heads {sel.ref} (k={sel.k})"] = sel.heads
    print(f"{args.dataset}: {len(records)} queries; nDCG@10, MRR@10 (relevance level {args.level})")
    out = {}
    for label, h in heads.items():
        nd, mr = [], []
        for rec in records:
            s = np.asarray(rec.scores)
            if h == "input":
                order = list(rec.doc_ids)
            else:
                total = s.sum(axis=(1, 2)) if h is None else sum(s[:, la, hd] for la, hd in h)
                order = _order(rec.doc_ids, np.asarray(total))
            nd.append(_ndcg(order, rec.qrels))
            mr.append(mrr_at(order, rec.qrels, 10, level=args.level))
        out[label] = {"ndcg@10": round(statistics.fmean(nd), 4), "mrr@10": round(statistics.fmean(mr), 4)}
        print(f"  {label:48s} {out[label]['ndcg@10']:.4f}  {out[label]['mrr@10']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def _ndcg(order: list[str], qrels: dict[str, int]) -> float:
    from hoprank.runs import ndcg_at

    return ndcg_at(order, qrels, 10)


def cmd_crossfit(args: argparse.Namespace) -> None:
    """Two-fold selection on the evaluation set itself, as the issue allows: heads chosen
    on the first half of the judged queries (file order) score the second half and vice
    versa; every query is scored by heads selected without it."""
    from hoprank.rankers.heads import read_records, replay, select_from_records

    records = [r for r in read_records(args.records) if r.dataset == args.dataset]
    half = len(records) // 2
    folds = [(records[:half], records[half:]), (records[half:], records[:half])]
    per_q: dict[str, float] = {}
    for train, test in folds:
        sel = select_from_records(train, k=args.k, name="fold", model="", model_sha256="")
        per_q.update(replay(test, sel.heads))
        print(f"  fold: selected on {len(train)}, scored {len(test)}: heads {sel.heads}")
    first = statistics.fmean(_first_stage(r) for r in records)
    allh = statistics.fmean(replay(records, None).values())
    out = {"queries": len(records), "first stage": round(first, 4), "ICR all heads": round(allh, 4)}
    out[f"ICR heads, 2-fold on {args.dataset} (k={args.k})"] = round(statistics.fmean(per_q.values()), 4)
    print(json.dumps(out, indent=1))


def _first_stage(rec: Any) -> float:
    from hoprank.evals.metrics import ndcg_at

    return ndcg_at(rec.doc_ids, rec.qrels, 10)


def cmd_check(args: argparse.Namespace) -> None:
    from hoprank.evals.metrics import ndcg_at
    from hoprank.rankers import PointwiseLLM
    from hoprank.rankers.heads import load_selection, read_records, replay
    from hoprank.rankers.icr import ICRRanker

    engine = _engine(args)
    sel = load_selection(args.selection, engine)
    items, _ = _items(args.set, args.depth)
    recs = {(r.dataset, r.qid): r for r in read_records(args.records)} if args.records else {}
    live = ICRRanker(engine, heads=args.selection)
    point = PointwiseLLM(engine)
    stats: dict[str, list[float]] = {"icr_heads_s": [], "pointwise_s": [], "icr_heads": [], "pointwise": []}
    for dataset, qid, query, docs, qrels in items:
        r = live.rank(query, docs)
        stats["icr_heads_s"].append(r.usage.seconds)
        stats["icr_heads"].append(ndcg_at(r.ids, qrels, 10))
        rec = recs.get((dataset, qid))
        if rec is not None:
            replayed = replay([rec], sel.heads)[f"{dataset}/{qid}"]
            same = abs(replayed - stats["icr_heads"][-1]) < 1e-9
            print(
                f"q={qid} live {stats['icr_heads'][-1]:.4f} replay {replayed:.4f} {'same' if same else 'DIFFERENT'}"
            )
        if args.pointwise:
            p = point.rank(query, docs)
            stats["pointwise_s"].append(p.usage.seconds)
            stats["pointwise"].append(ndcg_at(p.ids, qrels, 10))
        print(
            f"q={qid} icr_heads {r.usage.seconds:.1f}s"
            + (f" pointwise {stats['pointwise_s'][-1]:.1f}s" if args.pointwise else ""),
            flush=True,
        )
    summary = {k: round(statistics.fmean(v), 4) for k, v in stats.items() if v}
    if stats["pointwise_s"]:
        summary["icr_heads_over_pointwise_seconds"] = round(
            statistics.fmean(stats["icr_heads_s"]) / statistics.fmean(stats["pointwise_s"]), 3
        )
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--model", default="qwen2.5-coder-1.5b")
    rec.add_argument("--set", action="append", required=True)
    rec.add_argument("--depth", type=int, default=20)
    rec.add_argument("--threads", type=int, default=2)
    rec.add_argument("--out", type=Path, required=True)
    sel = sub.add_parser("select")
    sel.add_argument("--records", type=Path, required=True)
    sel.add_argument("--calibration", action="append", required=True)
    sel.add_argument("--k", type=int, default=16)
    sel.add_argument("--depth", type=int, default=20)
    sel.add_argument("--name", required=True)
    sel.add_argument("--save", default=None)
    sel.add_argument("--model-name", default="qwen2.5-coder-1.5b")
    sel.add_argument("--sha256", default="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
    ev = sub.add_parser("evaluate")
    ev.add_argument("--records", type=Path, required=True)
    ev.add_argument("--dataset", required=True)
    ev.add_argument("--selection", action="append", default=[])
    ev.add_argument("--json", type=Path, default=None)
    ev.add_argument("--set", default=None, help="FOLDER:RUN:START:END: only these queries")
    ev.add_argument("--level", type=int, default=1, help="relevance level for MRR (DL19: 2)")
    cf = sub.add_parser("crossfit")
    cf.add_argument("--records", type=Path, required=True)
    cf.add_argument("--dataset", required=True)
    cf.add_argument("--k", type=int, default=16)
    ch = sub.add_parser("check")
    ch.add_argument("--model", default="qwen2.5-coder-1.5b")
    ch.add_argument("--selection", required=True)
    ch.add_argument("--set", required=True)
    ch.add_argument("--records", type=Path, default=None)
    ch.add_argument("--depth", type=int, default=20)
    ch.add_argument("--threads", type=int, default=2)
    ch.add_argument("--pointwise", action="store_true")
    ch.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    {
        "record": cmd_record,
        "select": cmd_select,
        "evaluate": cmd_evaluate,
        "crossfit": cmd_crossfit,
        "check": cmd_check,
    }[args.cmd](args)


if __name__ == "__main__":
    main()
