"""Multi-hop beyond two hops (issue 23, item 5): restated sub-questions and the chain bridge.

On HotpotQA dev (distractor) questions ``--start``..``--start+--limit`` (default
101–130, 1-based: the first 100 are the evaluation set) over the full 4,858-paragraph
BM25 index (as ``agents_hotpotqa.py``):

1. Restatements. Each question is decomposed with ``decompose@1`` and with
   ``decompose-chain@1``. "Before the fix" counts what the old decomposer returned: the
   original question (rule of ``hoprank.agents.hops.restates``) came back among the
   sub-questions of the first usable reply, or the old parse fallback put it there.
   "After" counts the new decomposer's re-asks, how many of them gave usable
   sub-questions, the fallbacks, and restatements left in the output (0 by design).
2. Support recall (both supporting paragraphs in the top k) of
     bm25      the question alone
     one_hop   decompose@1 + the one-hop bridge + RRF (system c0 of agents_hotpotqa.py)
     chain_d1  decompose@1 + the chain bridge (implicit chain: no #k references)
     chain     decompose-chain@1 + the chain bridge
   all with depth 20, RRF k 10, original weight 2, bridge_k 3, no rerank.

    nice -n 10 .venv/bin/python benchmarks/hops.py --model qwen2.5-coder-0.5b --limit 20 \\
        --out runs/hops/qwen05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._agents_records import Sink, read_jsonl  # noqa: E402
from benchmarks._engines import add_engine_args, open_engine  # noqa: E402
from hoprank.agents import Answer, Answerer, Decomposer, DecomposeRetrieveRerank, Decomposition  # noqa: E402
from hoprank.agents.hops import restates  # noqa: E402
from hoprank.evals.metrics import support_recall_at  # noqa: E402
from hoprank.tools.bm25 import BM25Retriever  # noqa: E402
from hoprank.tools.corpus import load_corpus  # noqa: E402
from hoprank.types import Document, Step  # noqa: E402

log = logging.getLogger("hops")
DATA = ROOT.parent / "shared" / "datasets"
CUTS = (2, 5, 10)
SYSTEMS = ("bm25", "one_hop", "chain_d1", "chain")
PROMPTS = {"one_hop": "decompose", "chain_d1": "decompose", "chain": "decompose-chain"}


class _Memo(Decomposer):
    """Decomposes each question once per prompt (one_hop and chain_d1 share it)."""

    def __init__(self, inner: Decomposer) -> None:
        self.__dict__.update(inner.__dict__)
        self.cache: dict[str, Decomposition] = {}

    async def adecompose(self, question: str) -> Decomposition:
        if question not in self.cache:
            self.cache[question] = await super().adecompose(question)
        return self.cache[question]


class _MemoAnswerer(Answerer):
    """Answers each (question, passages) once (the first hop is often the same)."""

    cache: dict[tuple[str, tuple[str, ...]], Answer]

    async def aanswer(self, question: str, evidence: Sequence[Document]) -> Answer:
        cache: dict[tuple[str, tuple[str, ...]], Answer] = self.__dict__.setdefault("cache", {})
        key = (question, tuple(d.id for d in evidence))
        if key not in cache:
            cache[key] = await super().aanswer(question, evidence)
        return cache[key]


def _parsed(step: Step) -> bool:
    return "restated" in step.output  # set by every reply that parsed


def _old_returned_original(dec: Decomposition) -> bool:
    """Whether the decomposer before the fix returned the question as a sub-question:
    the first reply that parsed held a restatement (it was kept then), or no reply
    parsed (the first, then the same repair re-ask) and the old fallback was the
    question itself."""
    for step in dec.trace[:2]:
        if _parsed(step):
            return bool(step.output["restated"])
    return True


def _decomposition_record(dec: Decomposition) -> dict[str, Any]:
    return {
        "sub_questions": dec.sub_questions,
        "first_reply_restated": len(dec.trace[0].output.get("restated", [])),
        "first_reply_parsed": _parsed(dec.trace[0]),
        "old_returned_original": _old_returned_original(dec),
        "left_restated": sum(restates(s, dec.question) for s in dec.sub_questions),
        "counters": dec.counters,
        "reasked": dec.reasked,
        "fallback_to": dec.fallback_to,
        "llm_calls": dec.usage.llm_calls,
        "seconds": dec.usage.seconds,
    }


async def run(args: argparse.Namespace, engine: Any, sink: Sink) -> list[dict[str, Any]]:
    folder = Path(args.data) / "hotpotqa-dev-distractor-500"
    bm25 = BM25Retriever.from_documents(
        load_corpus(folder / "corpus.jsonl"), stemmer="english", stopwords="en"
    )
    queries = read_jsonl(folder / "queries.jsonl", args.start + args.limit)[args.start :]
    systems = [s for s in args.systems.split(",") if s]
    decomposers = {p: _Memo(Decomposer(engine, prompt=p)) for p in set(PROMPTS.values())}
    answerer = _MemoAnswerer(engine, mode="short")
    fusion: dict[str, Any] = {"k": 20, "rrf_k": 10, "original_weight": 2.0, "bridge_k": 3, "top_k": 10}
    pipes = {
        name: DecomposeRetrieveRerank(
            bm25,
            decomposer=decomposers[PROMPTS[name]],
            bridge_answerer=answerer,
            bridge="one_hop" if name == "one_hop" else "chain",
            **fusion,
        )
        for name in systems
        if name != "bm25"
    }
    records = list(sink.done)
    for i, q in enumerate(queries, 1):
        if q["id"] in sink.qids:
            continue
        rec: dict[str, Any] = {"qid": q["id"], "question": q["text"], "systems": {}}
        for name in systems:
            t0 = time.perf_counter()
            if name == "bm25":
                ranked, extra = await bm25.search(q["text"], 20), {}
            else:
                res = await pipes[name].arun(q["text"])
                ranked = res.ranked
                hops = [{"query": h.query, "answer": h.answer, "resolved": h.resolved} for h in res.hops]
                extra = {"hops": hops, "bridge": res.bridge, "llm_calls": res.usage.llm_calls}
            ids = [d.id for d in ranked]
            rec["systems"][name] = {
                **{f"R@{k}": support_recall_at(ids, q["supporting"], k) for k in CUTS},
                "seconds": time.perf_counter() - t0,
                **extra,
            }
        rec["decompositions"] = {
            # the pipeline strips the question before decomposing it
            p: _decomposition_record(d.cache[q["text"].strip()])
            for p, d in decomposers.items()
            if q["text"].strip() in d.cache
        }
        records.append(rec)
        sink.write([rec])
        log.info(
            "[%d/%d] %s",
            i,
            len(queries),
            "  ".join(f"{n}: R@5={r['R@5']:.0f} {r['seconds']:.0f}s" for n, r in rec["systems"].items()),
        )
    return records


def table(records: list[dict[str, Any]]) -> str:
    """The two tables of the README: restatements per prompt, recall per system."""
    n = len(records)
    lines = [
        f"questions: {n}",
        "",
        "| prompt | original came back before (first reply) | before (old decomposer) | re-asked "
        "(restated) | re-ask usable | fallback rule split / none | left in output |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in sorted({p for r in records for p in r["decompositions"]}):
        ds = [r["decompositions"][p] for r in records if p in r["decompositions"]]
        reasked = [d for d in ds if d["counters"]["reask_restated"]]
        lines.append(
            f"| {p} | {sum(d['first_reply_restated'] > 0 for d in ds)}/{len(ds)} "
            f"| {sum(d['old_returned_original'] for d in ds)}/{len(ds)} | {len(reasked)} "
            f"| {sum(d['fallback_to'] is None for d in reasked)}/{len(reasked)} "
            f"| {sum(d['counters']['fallback_rule_split'] for d in ds)} / "
            f"{sum(d['counters']['fallback_none'] for d in ds)} | {sum(d['left_restated'] for d in ds)} |"
        )
    lines += ["", "| system | n | R@2 | R@5 | R@10 | LLM calls/q | s/q |", "|---|---|---|---|---|---|---|"]
    for name in SYSTEMS:
        rows = [r["systems"][name] for r in records if name in r["systems"]]
        if not rows:
            continue
        cells = [f"{sum(x[f'R@{k}'] for x in rows) / len(rows):.3f}" for k in CUTS]
        calls = sum(x.get("llm_calls", 0) for x in rows) / len(rows)
        secs = sum(x["seconds"] for x in rows) / len(rows)
        lines.append(f"| {name} | {len(rows)} | {' | '.join(cells)} | {calls:.1f} | {secs:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_engine_args(ap, default_model="qwen2.5-coder-0.5b")
    ap.add_argument(
        "--start", type=int, default=100, help="0-based first question (default 100: question 101)"
    )
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"subset of {','.join(SYSTEMS)}")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument(
        "--out", default=None, help="records to PREFIX.jsonl per question, the tables to PREFIX.md"
    )
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--report", metavar="JSONL", help="run nothing: print the tables of saved records")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.report:
        records = [
            json.loads(line) for line in Path(args.report).read_text(encoding="utf-8").splitlines() if line
        ]
        sys.stdout.write(table(records) + "\n")
        return
    with Sink(args.out, resume=args.resume) as sink, open_engine(args) as engine:
        records = asyncio.run(run(args, engine, sink))
    text = table(records)
    if args.out:
        Path(args.out).with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
