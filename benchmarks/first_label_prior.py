"""Does removing FIRST's label prior help? Batch calibration from saved label scores.

FIRST's label distribution on a small model carries a prior over the labels themselves
(Qwen2.5-Coder-1.5B favours ``A``, ``B``, ``D``, ``G`` whatever the passages). *Batch
calibration* (Zhou et al., 2023) estimates that prior without any relevance label, as the
mean renormalised log-probability of each label over the other queries' windows, and
subtracts it (here weighted by ``w``; leave-one-query-out, so a query's own scores never
enter its prior). This script replays it on the per-query records that
``rerank_dl19.py`` writes (``label_scores``, one 20-passage window per query), with no
model call, and prints nDCG@10 next to the BM25 order and plain FIRST.

    .venv/bin/python benchmarks/first_label_prior.py benchmarks/results/dl19-first-fp32-1.5b.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rerank_dl19 import load


def ndcg10(qid: str, order: list[str], qrels: dict[str, dict[str, int]]) -> float:
    import pytrec_eval

    ev = pytrec_eval.RelevanceEvaluator({qid: qrels.get(qid, {})}, {"ndcg_cut.10"})
    run = {qid: {d: float(len(order) - i) for i, d in enumerate(order)}}
    return float(ev.evaluate(run)[qid]["ndcg_cut_10"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("records", type=Path, help="rerank_dl19.py JSONL of a FIRST run (window = depth = 20)")
    ap.add_argument("--weights", default="0,0.25,0.5,0.75,1")
    args = ap.parse_args()
    rows = [json.loads(x) for x in args.records.read_text(encoding="utf-8").splitlines() if x.strip()]
    items, qrels = load("dl19", 20, None)
    windows = {it["qid"]: [d.id for d in it["docs"]] for it in items}
    data = []
    for r in rows:
        if len(r.get("label_scores") or []) != 1:
            raise SystemExit(f"query {r['qid']}: needs exactly one FIRST window of label scores")
        data.append((r["qid"], windows[r["qid"]], r["label_scores"][0]))
    # labels in window order: the merged alphabet is in alphabetical order
    labels = sorted({lab for _, _, s in data for lab in s})
    bm25 = statistics.fmean(ndcg10(q, ids, qrels) for q, ids, _ in data)
    print(f"{len(data)} queries, labels {''.join(labels)}; BM25 order nDCG@10 {bm25:.4f}")
    print("| w (prior weight) | nDCG@10 |\n|---|---|")
    for w in (float(x) for x in args.weights.split(",")):
        scores = []
        for j, (qid, ids, s) in enumerate(data):
            others = [o[2] for k, o in enumerate(data) if k != j]
            prior = {lab: statistics.fmean(o[lab] for o in others if lab in o) for lab in labels}
            value = {ids[i]: s[lab] - w * prior[lab] for i, lab in enumerate(labels[: len(ids)]) if lab in s}
            order = sorted(ids, key=lambda d: (-value.get(d, float("-inf")), ids.index(d)))
            scores.append(ndcg10(qid, order, qrels))
        print(f"| {w:g}{' (plain FIRST)' if w == 0 else ''} | {statistics.fmean(scores):.4f} |")


if __name__ == "__main__":
    main()
