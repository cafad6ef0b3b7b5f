"""Agentic multi-hop retrieval on HotpotQA dev (distractor, 500 questions, full pool).

All 4,858 paragraphs are indexed with BM25 (title + text, English stemming and
stopwords); the queries are the questions. Support recall@k = both supporting
paragraphs are in the top k. Systems:

  a  single-query BM25
  b  (a) + FIRST rerank of its top 20 (``--ranker`` swaps FIRST for another ranker)
  c0 decompose + per-sub-question BM25 + RRF (no rerank; diagnostic, not in the default set)
  c  decompose + per-sub-question BM25 + RRF + FIRST rerank (pool 20)
  d  MultiHopAgent (JSON action protocol, BM25 tool)

Reported: support recall@2/5/10, MRR@10 (first supporting paragraph), answer EM/F1 for
b–d (Answerer short mode on the top-5 evidence; d also its own answer), seconds and
tokens per question (system / answering).

``--multihop-rag`` instead decomposes the MultiHop-RAG queries and reports the fraction
that yield at least 2 well-formed sub-questions.

    .venv/bin/python benchmarks/agents_hotpotqa.py --limit 100 --model qwen2.5-coder-1.5b
    .venv/bin/python benchmarks/agents_hotpotqa.py --multihop-rag --limit 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._agents_records import (  # noqa: E402
    Sink,
    hotpotqa_table,
    read_jsonl,
    read_records,
    report_table,
)
from benchmarks._engines import add_engine_args, open_engine  # noqa: E402
from hoprank.agents import (  # noqa: E402
    Answer,
    Answerer,
    Budget,
    Decomposer,
    DecomposeRetrieveRerank,
    Decomposition,
    MultiHopAgent,
)
from hoprank.agents._common import norm_query  # noqa: E402
from hoprank.evals.metrics import exact_match, f1_score, mrr_at, support_recall_at  # noqa: E402
from hoprank.tools.bm25 import BM25Retriever  # noqa: E402
from hoprank.tools.corpus import load_corpus  # noqa: E402
from hoprank.types import Document, Usage  # noqa: E402

log = logging.getLogger("agents_hotpotqa")
DATA = ROOT.parent / "shared" / "datasets"
CUTS = (2, 5, 10)


class _Memo(Decomposer):
    """Decomposes each question once (systems c0 and c share the decomposition)."""

    def __init__(self, inner: Decomposer) -> None:
        self.__dict__.update(inner.__dict__)
        self._cache: dict[str, Decomposition] = {}

    async def adecompose(self, question: str) -> Decomposition:
        if question not in self._cache:
            self._cache[question] = await super().adecompose(question)
        return self._cache[question]


class _MemoAnswerer(Answerer):
    """Answers each (question, evidence) once (the bridge of c0 and c)."""

    _cache: dict[tuple[str, tuple[str, ...]], Answer]

    async def aanswer(self, question: str, evidence: Sequence[Document]) -> Answer:
        cache = self.__dict__.setdefault("_cache", {})
        key = (question, tuple(d.id for d in evidence))
        if key not in cache:
            cache[key] = await super().aanswer(question, evidence)
        return cache[key]


class _Replay(Decomposer):
    """Decompositions and bridge answers read back from saved c0/c records
    (``--reuse-decompositions``): run c with another reranker without paying for the
    decomposition and bridge generations again (its s/q then excludes them)."""

    def __init__(self, inner: Decomposer, path: str, queries: list[dict[str, Any]]) -> None:
        self.__dict__.update(inner.__dict__)
        # the pipeline strips the question before decomposing, so look it up normalised
        self.qid_of = {norm_query(q["text"]): q["id"] for q in queries}
        self.subs: dict[str, tuple[list[str], bool]] = {}
        self.bridges: dict[str, str | None] = {}
        for _, r in read_records(Path(path)):
            if r.get("system") not in ("c0", "c") or "sub_questions" not in r:
                continue
            self.subs[r["qid"]] = (list(r["sub_questions"]), bool(r.get("decompose_fallback")))
            for sub in r["sub_questions"]:
                self.bridges[norm_query(sub)] = r.get("bridge")
        if not self.subs:
            raise SystemExit(f"{path}: no c0/c records with sub_questions to reuse")

    async def adecompose(self, question: str) -> Decomposition:
        qid = self.qid_of.get(norm_query(question))
        if qid is None or qid not in self.subs:
            raise SystemExit(f"no saved decomposition for question {qid or question!r}")
        subs, fallback = self.subs[qid]
        return Decomposition(question=question, sub_questions=subs, fallback=fallback)


class _ReplayBridge(Answerer):
    """The saved bridge answer of a sub-question (an empty fallback where there was none)."""

    def __init__(self, engine: Any, replay: _Replay) -> None:
        super().__init__(engine, mode="short")
        self.replay = replay

    async def aanswer(self, question: str, evidence: Sequence[Document]) -> Answer:
        key = norm_query(question)
        if key not in self.replay.bridges:
            raise SystemExit(f"no saved bridge answer for sub-question {question!r}")
        saved = self.replay.bridges[key]
        return Answer(question=question, answer=saved or "", mode="short", fallback=saved is None)


def _params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _retrieval_metrics(ranked: list[str], gold: list[str]) -> dict[str, float]:
    out = {f"R@{k}": support_recall_at(ranked, gold, k) for k in CUTS}
    out["MRR@10"] = mrr_at(ranked, dict.fromkeys(gold, 1), 10)
    return out


def _record(
    system: str, q: dict[str, Any], ranked: list[Document], usage: Usage, seconds: float
) -> dict[str, Any]:
    ids = [d.id for d in ranked]
    return {
        "system": system,
        "qid": q["id"],
        "ranked": ids[:20],
        **_retrieval_metrics(ids, q["supporting"]),
        "seconds": seconds,
        "tokens": usage.total_tokens,
        "llm_calls": usage.llm_calls,
    }


async def _answer(
    answerer: Answerer, q: dict[str, Any], evidence: list[Document], rec: dict[str, Any]
) -> None:
    t0 = time.perf_counter()
    ans = await answerer.aanswer(q["text"], evidence[:5])
    rec["answer"] = ans.answer
    rec["EM"] = exact_match(ans.answer, q["answers"])
    rec["F1"] = f1_score(ans.answer, q["answers"])
    rec["ans_seconds"] = time.perf_counter() - t0
    rec["ans_tokens"] = ans.usage.total_tokens


async def run_hotpotqa(args: argparse.Namespace, engine: Any, sink: Sink) -> list[dict[str, Any]]:
    folder = Path(args.data) / "hotpotqa-dev-distractor-500"
    docs = load_corpus(folder / "corpus.jsonl")
    t0 = time.perf_counter()
    bm25 = BM25Retriever.from_documents(docs, stemmer="english", stopwords="en")
    log.info("indexed %d paragraphs in %.1f s", len(docs), time.perf_counter() - t0)
    queries = read_jsonl(folder / "queries.jsonl", args.limit)
    systems = set(args.systems.split(","))

    ranker = None
    if engine is not None and systems & {"b", "c"}:
        from hoprank.rankers import make_ranker

        ranker = make_ranker(args.ranker, engine, **_params(args.ranker_param))
    answerer = Answerer(engine, mode="short") if engine is not None and not args.no_answer else None
    decomposer: Decomposer | None = _Memo(Decomposer(engine)) if engine is not None else None
    bridge: Answerer | None = (
        _MemoAnswerer(engine, mode="short") if engine is not None and not args.no_bridge else None
    )
    replay = None
    if args.reuse_decompositions and engine is not None:
        replay = _Replay(Decomposer(engine), args.reuse_decompositions, queries)
        decomposer = replay
        if bridge is not None:
            bridge = _ReplayBridge(engine, replay)
    fusion = {"k": args.depth, "rrf_k": args.rrf_k, "original_weight": args.original_weight}
    pipe_c = (
        DecomposeRetrieveRerank(
            bm25,
            decomposer=decomposer,
            ranker=ranker,
            bridge_answerer=bridge,
            pool_depth=args.depth,
            top_k=10,
            **fusion,
        )
        if "c" in systems
        else None
    )
    pipe_c0 = (
        DecomposeRetrieveRerank(bm25, decomposer=decomposer, bridge_answerer=bridge, top_k=10, **fusion)
        if "c0" in systems
        else None
    )
    agent = (
        MultiHopAgent(engine, bm25, budget=Budget(max_steps=args.agent_steps), k=args.agent_k)
        if "d" in systems and engine is not None
        else None
    )

    records: list[dict[str, Any]] = list(sink.done)
    for i, q in enumerate(queries, 1):
        if q["id"] in sink.qids:
            continue
        question = q["text"]
        n_before = len(records)
        t0 = time.perf_counter()
        first = await bm25.search(question, max(args.depth, 10))
        t_bm25 = time.perf_counter() - t0
        if "a" in systems:
            records.append(_record("a", q, first, Usage(), t_bm25))
        if "b" in systems and ranker is not None:
            t0 = time.perf_counter()
            rk = await ranker.arank(question, first[: args.depth])
            ranked = list(rk.documents) + first[args.depth :]
            rec = _record("b", q, ranked, rk.usage, t_bm25 + time.perf_counter() - t0)
            rec["fallbacks"] = rk.fallbacks
            rec["ranker"] = args.ranker
            if answerer is not None:
                await _answer(answerer, q, ranked, rec)
            records.append(rec)
        for name, pipe in (("c0", pipe_c0), ("c", pipe_c)):
            if pipe is None:
                continue
            t0 = time.perf_counter()
            res = await pipe.arun(question)
            rec = _record(name, q, res.ranked, res.usage, time.perf_counter() - t0)
            rec["sub_questions"] = res.sub_questions
            rec["decompose_fallback"] = res.fallback
            rec["bridge"] = res.bridge
            if pipe is pipe_c:
                rec["ranker"] = args.ranker
            if replay is not None:
                rec["reused_decomposition"] = True
            if answerer is not None:
                await _answer(answerer, q, res.ranked, rec)
            records.append(rec)
        if agent is not None:
            t0 = time.perf_counter()
            ares = await agent.arun(question)
            rec = _record("d", q, ares.evidence, ares.usage, time.perf_counter() - t0)
            rec.update(state=ares.state, steps=ares.steps, queries=ares.queries, agent_answer=ares.answer)
            rec["agent_EM"] = exact_match(ares.answer or "", q["answers"])
            rec["agent_F1"] = f1_score(ares.answer or "", q["answers"])
            if answerer is not None:
                await _answer(answerer, q, ares.evidence, rec)
            records.append(rec)
        done = records[n_before:]
        sink.write(done)
        log.info(
            "[%d/%d] %s",
            i,
            len(queries),
            "  ".join(f"{r['system']}: R@5={r['R@5']:.0f} {r['seconds']:.1f}s" for r in done),
        )
    return records


def well_formed(sub: str, question: str) -> bool:
    """A usable sub-question: at least 3 words, not the original question."""
    return len(sub.split()) >= 3 and norm_query(sub) != norm_query(question)


async def run_multihop_rag(
    args: argparse.Namespace, engine: Any, sink: Sink
) -> tuple[list[dict[str, Any]], str]:
    queries = read_jsonl(Path(args.data) / "multihop-rag-facts-500" / "queries.jsonl", args.limit)
    decomposer = Decomposer(engine)
    records = list(sink.done)
    for i, q in enumerate(queries, 1):
        if q["id"] in sink.qids:
            continue
        t0 = time.perf_counter()
        dec = await decomposer.adecompose(q["text"])
        good = [s for s in dec.sub_questions if well_formed(s, q["text"])] if not dec.fallback else []
        records.append(
            {
                "qid": q["id"],
                "question_type": q.get("question_type"),
                "sub_questions": dec.sub_questions,
                "well_formed": len(good),
                "ok": len(good) >= 2,
                "fallback": dec.fallback,
                "reasked": dec.reasked,
                "seconds": time.perf_counter() - t0,
                "tokens": dec.usage.total_tokens,
            }
        )
        sink.write(records[-1:])
        log.info("[%d/%d] %d well-formed sub-questions", i, len(queries), len(good))
    n = len(records)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_type.setdefault(str(r["question_type"]), []).append(r)
    lines = [
        "| question type | n | ≥2 well-formed | fallback | re-asked | mean subs | s/q | tok/q |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in [*sorted(by_type.items()), ("all", records)]:
        lines.append(
            f"| {name} | {len(rows)} | {statistics.fmean(r['ok'] for r in rows):.3f} | "
            f"{sum(r['fallback'] for r in rows)} | {sum(r['reasked'] for r in rows)} | "
            f"{statistics.fmean(len(r['sub_questions']) for r in rows):.2f} | "
            f"{statistics.fmean(r['seconds'] for r in rows):.1f} | {statistics.fmean(r['tokens'] for r in rows):.0f} |"
        )
    return records, f"MultiHop-RAG decomposition ({args.model}, n={n})\n\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=100, help="first N questions (default 100)")
    add_engine_args(ap)
    ap.add_argument("--systems", default="a,b,c,d", help="comma-separated subset of a,b,c0,c,d")
    ap.add_argument("--depth", type=int, default=20, help="BM25 depth per query and rerank pool (default 20)")
    ap.add_argument("--agent-steps", type=int, default=4)
    ap.add_argument("--agent-k", type=int, default=5, help="documents per agent search")
    ap.add_argument("--no-answer", action="store_true", help="skip answer EM/F1")
    ap.add_argument("--no-bridge", action="store_true", help="c/c0 without the bridge stage")
    ap.add_argument(
        "--reuse-decompositions",
        metavar="JSONL",
        help="c/c0 take their sub-questions and bridge answers from these saved records "
        "(e.g. to rerank with another --ranker); their s/q then excludes those generations",
    )
    ap.add_argument("--rrf-k", type=int, default=10, help="RRF k of c/c0 (default 10)")
    ap.add_argument(
        "--original-weight",
        type=float,
        default=2.0,
        help="RRF weight of the original question's lists (c/c0)",
    )
    ap.add_argument(
        "--ranker",
        default="first",
        help="reranker of systems b and c (a hoprank.rankers.make_ranker name; default first)",
    )
    ap.add_argument(
        "--ranker-param",
        "--first-param",
        dest="ranker_param",
        action="append",
        default=[],
        help="ranker parameter key=value (JSON value); repeatable",
    )
    ap.add_argument(
        "--multihop-rag", action="store_true", help="decomposition quality on MultiHop-RAG instead"
    )
    ap.add_argument("--data", default=str(DATA), help="shared datasets folder")
    ap.add_argument(
        "--out",
        default=None,
        help="records go to PREFIX.jsonl as each question finishes, the table to PREFIX.md",
    )
    ap.add_argument(
        "--resume", action="store_true", help="keep the questions already in PREFIX.jsonl and skip them"
    )
    ap.add_argument(
        "--report",
        nargs="+",
        metavar="JSONL",
        help="run nothing: rebuild the HotpotQA table from these records files (e.g. a,b,c from one "
        "run and d from another); a (system, question) pair found twice is an error",
    )
    ap.add_argument(
        "--common",
        action="store_true",
        help="with --report: keep only the questions that every system in the files answered",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "transformers", "hoprank"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.report:
        table = report_table(args)
        print(table)
        if args.out:
            Path(args.out).with_suffix(".md").write_text(table + "\n", encoding="utf-8")
        return

    t0 = time.perf_counter()
    needs_engine = args.multihop_rag or set(args.systems.split(",")) - {"a"}
    with (
        open_engine(args) if needs_engine else contextlib.nullcontext() as engine,
        Sink(args.out, resume=args.resume) as sink,
    ):
        if args.multihop_rag:
            records, table = asyncio.run(run_multihop_rag(args, engine, sink))
        else:
            records = asyncio.run(run_hotpotqa(args, engine, sink))
            table = (
                f"HotpotQA dev distractor-500, full pool BM25, first {args.limit} questions, "
                f"model {args.model} ({args.engine})\n\n" + hotpotqa_table(records, args)
            )
    table += f"\n\nTotal wall time {time.perf_counter() - t0:.0f} s."
    print(table)
    if args.out:
        Path(args.out).with_suffix(".md").write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
