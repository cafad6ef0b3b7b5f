"""Rebuild the shipped eval samples (hoprank/data/sample-*) from /work/shared/datasets.

Lines are copied verbatim from the shared files (same layout); only the selection is ours.
Usage: python scripts/build_eval_samples.py [SHARED_DATASETS_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/datasets")
DST = Path(__file__).resolve().parent.parent / "hoprank" / "data"

DL19_QUERIES = ["130510", "405717", "1115776"]  # mid-range BM25 nDCG@10, relevant passages below rank 10
DL19_DEPTH = 20
HOTPOT_N = 5  # the first five questions of the IRCoT dev sample


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def build(name: str, src: Path, qids: list[str], run_file: str, depth: int | None) -> None:
    out = DST / name
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(qids)
    queries = [ln for ln in lines(src / "queries.jsonl") if json.loads(ln)["id"] in wanted]
    queries.sort(key=lambda ln: qids.index(json.loads(ln)["id"]))
    run = [ln for ln in lines(src / run_file) if ln.split("\t")[0] in wanted]
    if depth is not None:
        run = [ln for ln in run if int(ln.split("\t")[2]) <= depth]
    docs = {ln.split("\t")[1] for ln in run}
    corpus = [ln for ln in lines(src / "corpus.jsonl") if json.loads(ln)["id"] in docs]
    qrels = [ln for ln in lines(src / "qrels.tsv") if ln.split("\t")[0] in wanted]
    for fname, content in (
        ("queries.jsonl", queries),
        ("corpus.jsonl", corpus),
        ("qrels.tsv", qrels),
        (run_file, run),
    ):
        (out / fname).write_text("".join(content), encoding="utf-8")
    print(f"{name}: {len(queries)} queries, {len(corpus)} docs, {len(qrels)} qrels, {len(run)} run lines")


def main() -> None:
    build("sample-dl19", SRC / "trec-dl-2019-passage", DL19_QUERIES, "run.bm25.tsv", DL19_DEPTH)
    hp = SRC / "hotpotqa-dev-distractor-500"
    first = [json.loads(ln)["id"] for ln in lines(hp / "queries.jsonl")[:HOTPOT_N]]
    build("sample-hotpotqa", hp, first, "run.distractor.tsv", None)


if __name__ == "__main__":
    main()
