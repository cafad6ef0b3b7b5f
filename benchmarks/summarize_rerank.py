"""One table from several reranking runs, with each run also fused with the first stage.

Each input is ``label=path``: a per-query JSONL written by ``rerank_dl19.py`` or an evals
run folder (``hoprank eval --out``; its ``results.jsonl``). For every run it prints the
metric of the model's order and of that order fused with the first-stage order by
:class:`hoprank.rankers.PriorFusion` (weighted RRF, ``k=60``) at each ``--weights``
value, plus seconds and prompt tokens per query. Fusion is deterministic given the model
order, so it is computed here from the saved orders rather than by re-running the model.

``--weights 1`` (plain, unweighted RRF) is the setting fixed in advance; other weights
are a sweep on the same queries (not held out) and are labelled as such.

    .venv/bin/python benchmarks/summarize_rerank.py --dataset dl19 \\
        first=runs/dl19/first.jsonl rankgpt=runs/pv/rankgpt@1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from rerank_dl19 import hotpot_metrics, load, ndcg10  # noqa: E402

from hoprank.evals.results import ResultsLog  # noqa: E402
from hoprank.runs import rrf_fuse  # noqa: E402
from hoprank.types import Document, Ranking  # noqa: E402


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """qid -> {"ranked": [ids], "seconds", "prompt_tokens"} from either format."""
    if path.is_dir():  # an evals run folder: its results log (torn last line skipped)
        return {
            qid: {
                "ranked": [x[0] for x in r["ranked"]],
                "seconds": r["usage"]["seconds"],
                "prompt_tokens": r["usage"]["prompt_tokens"],
            }
            for qid, r in ResultsLog(path / "results.jsonl").load().items()
        }
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {r["qid"]: {k: r[k] for k in ("ranked", "seconds", "prompt_tokens")} for r in rows}


def score(dataset: str, qid: str, ids: list[str], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    ranking = Ranking(query="", documents=[Document(id=i, text="") for i in ids])
    if dataset == "dl19":
        return {"ndcg@10": ndcg10(qid, ranking, qrels)}
    return hotpot_metrics(qid, ranking, qrels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="label=path")
    ap.add_argument("--dataset", choices=["dl19", "hotpotqa"], default="dl19")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--weights", default="1", help="prior weights for the fused rows (comma list)")
    args = ap.parse_args()
    items, qrels = load(args.dataset, args.depth, None if args.dataset == "dl19" else 500)
    prior = {it["qid"]: it["docs"] for it in items}
    weights = [float(w) for w in args.weights.split(",") if w.strip()]
    keys = ["ndcg@10"] if args.dataset == "dl19" else ["mrr@10", "recall@2"]
    head = ["run", "queries", *keys, "s/query", "prompt tok/query"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for spec in args.runs:
        label, _, path = spec.partition("=")
        rows = read_rows(Path(path))
        qids = [q for q in prior if q in rows]
        variants: list[tuple[str, float | None]] = [(label, None)]
        variants += [(f"{label} + BM25 (RRF, w={w:g})", w) for w in weights]
        for name, w in variants:
            per: list[dict[str, float]] = []
            for q in qids:
                by_id = {d.id: d for d in prior[q]}
                model = [by_id[i] for i in rows[q]["ranked"]]
                ids = (
                    [d.id for d in rrf_fuse([model, prior[q]], k=60, weights=[1.0, w])]
                    if w
                    else rows[q]["ranked"]
                )
                per.append(score(args.dataset, q, ids, qrels))
            cells = [name, str(len(qids)), *[f"{statistics.fmean(p[k] for p in per):.4f}" for k in keys]]
            cells += [
                f"{statistics.fmean(rows[q]['seconds'] for q in qids):.2f}",
                f"{statistics.fmean(rows[q]['prompt_tokens'] for q in qids):.0f}",
            ]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
