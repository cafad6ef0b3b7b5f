"""Agentic multi-hop retrieval on a QA dataset (default: HotpotQA dev distractor-500, BM25
over the full pool of 4,858 paragraphs): a thin caller of ``hoprank eval --task qa``.

The systems are the package's presets (``hoprank.agents.presets.PRESETS``), the very
objects ``DecomposeRetrieveRerank.from_preset`` and ``hoprank eval --task qa --system``
use:

  a  single-query BM25
  b  (a) + FIRST rerank of its top 20 (``--ranker`` swaps FIRST for another ranker)
  c0 decompose + bridge + per-sub-question BM25 + RRF (k=10, weight 2 on the question's lists)
  c  (c0) + FIRST rerank of the fused top 20
  d  MultiHopAgent (JSON action protocol, BM25 tool, 4 steps of 5 passages)

Each system writes a resumable run folder ``OUT/<system>`` (manifest, results.jsonl,
questions.jsonl, metrics.json, report.md); the table (support recall@2/5/10, MRR@10,
answer EM/F1 of the short-mode Answerer on the top 5, seconds and tokens per question for
the system and for answering apart) is printed and written to ``OUT.md``. LLM calls go
through the cache, so (c) run after (c0) replays its decompositions and bridge answers
(its questions are flagged ``cached`` and its s/q is the rest of the pipeline only).
The same run from the command line::

    hoprank eval --task qa --dataset ../shared/datasets/hotpotqa-dev-distractor-500 \\
        --system a,b,c0,c,d --limit 100 --model qwen2.5-coder-1.5b --out runs/agents
    hoprank compare runs/agents/*

This script adds the benchmarks' engine choice (``--engine transformers|openai|llamacpp``,
``benchmarks/_engines.py``), the historical option names (``--depth``, ``--rrf-k``,
``--ranker``...: each one a ``-p`` override, left to the preset when not given),
``--multihop-rag`` (decomposition well-formedness on MultiHop-RAG) and ``--report``
(the table of records saved by the earlier version of this script,
``benchmarks/results/agents-hotpotqa-*.jsonl``).

    .venv/bin/python benchmarks/agents_hotpotqa.py --limit 100 --model qwen2.5-coder-1.5b --out runs/agents
    .venv/bin/python benchmarks/agents_hotpotqa.py --multihop-rag --limit 100 --out runs/mhrag
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._agents_records import report_table  # noqa: E402
from benchmarks._engines import add_engine_args, open_engine  # noqa: E402
from hoprank.agents import Decomposer, resolve_systems  # noqa: E402
from hoprank.agents._common import norm_query  # noqa: E402
from hoprank.evals.qa_report import qa_table  # noqa: E402
from hoprank.evals.qa_runner import QAExperimentConfig, QAInputs, run_qa_grid  # noqa: E402

log = logging.getLogger("agents_hotpotqa")
DATA = ROOT.parent / "shared" / "datasets"


def overrides(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The ``-p`` overrides the historical options ask for (none: the presets stand)."""
    out: dict[str, Any] = {}
    if args.depth is not None:
        out.update({"pipeline.k": max(args.depth, 10), "pipeline.pool_depth": args.depth})
    if args.rrf_k is not None:
        out["pipeline.rrf_k"] = args.rrf_k
    if args.original_weight is not None:
        out["pipeline.original_weight"] = args.original_weight
    if args.agent_steps is not None:
        out["agent.budget.max_steps"] = args.agent_steps
    if args.agent_k is not None:
        out["agent.k"] = args.agent_k
    if args.no_answer:
        out["answer"] = False
    if args.no_bridge:
        out["bridge"] = False
    params = {}
    for pair in args.ranker_param:
        key, _, raw = pair.partition("=")
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw
    for name in ("b", "c"):  # the reranked systems
        if name in names and args.ranker is not None:
            out[f"{name}.ranker"] = args.ranker
        if name in names and params:
            out[f"{name}.ranker_params"] = params
    for key, value in (tuple(p.split("=", 1)) for p in args.param):
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def notes(runs: list[dict[str, Any]]) -> list[str]:
    """What the systems did, under the table: decompositions, bridge answers, the agent's
    states, questions replayed from the LLM cache."""
    lines = []
    for m in runs:
        st, use = m.get("system_stats") or {}, m["usage"]
        name = m["label"].split(" ", 1)[0]
        if "decomposition" in st:
            d = st["decomposition"]
            lines.append(
                f"({name}) decomposition: {d['mean_sub_questions']:.2f} sub-questions per question, "
                f"{d['fallbacks']}/{m['n_queries']} fallbacks"
            )
        if "agent" in st:
            a = st["agent"]
            own = m["aggregate"]
            extra = (
                f"; own-answer EM {own['agent_em']:.3f} F1 {own['agent_f1']:.3f}" if "agent_em" in own else ""
            )
            lines.append(
                f"({name}) agent: states {a['states']}, {a['mean_steps']:.2f} steps on average{extra}"
            )
        if use.get("cached_questions"):
            lines.append(
                f"({name}) {use['cached_questions']} of {m['n_queries']} questions replayed LLM calls from the "
                "cache (e.g. c0's decompositions and bridges): their s/q leaves those calls out"
            )
    return lines


def run_systems(args: argparse.Namespace) -> str:
    """Run the grid; the table, titled by the dataset's own name."""
    dataset = args.dataset or str(Path(args.data) / "hotpotqa-dev-distractor-500")
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    systems = resolve_systems(names, overrides(args, names))
    needs_engine = any(s.needs_engine for s in systems)
    config = QAExperimentConfig(
        dataset=dataset, system=systems[0], model=args.model, limit=args.limit, concurrency=args.concurrency
    )
    out = Path(args.out or "runs/agents")
    with open_engine(args) if needs_engine else contextlib.nullcontext() as engine:
        results = run_qa_grid(
            config,
            systems,
            out,
            inputs=QAInputs(engine=engine),
            cache=not args.no_cache,
            overwrite=args.overwrite,
            progress=None,
        )
    runs = [json.loads((r.run_dir / "metrics.json").read_text(encoding="utf-8")) for r in results]
    man = json.loads((results[0].run_dir / "manifest.json").read_text(encoding="utf-8"))
    title = (
        f"{man['dataset']['name']}, {systems[0].retriever} over {man['dataset']['docs']:,} passages, "
        f"first {runs[0]['n_queries']} questions"
        + (f", model {args.model} ({args.engine})" if needs_engine else "")
    )
    body = qa_table(runs)
    extra = notes(runs)
    return f"{title}\n\n{body}" + ("\n\n" + "\n".join(extra) if extra else "") + f"\n\nRun folders: {out}/*"


def well_formed(sub: str, question: str) -> bool:
    """A usable sub-question: at least 3 words, not the original question."""
    return len(sub.split()) >= 3 and norm_query(sub) != norm_query(question)


async def _decompose_all(decomposer: Decomposer, queries: list[Any], log_: Any, done: dict[str, Any]) -> None:
    for i, q in enumerate(queries, 1):
        if q.id in done:
            continue
        t0 = time.perf_counter()
        dec = await decomposer.adecompose(q.text)
        good = [s for s in dec.sub_questions if well_formed(s, q.text)] if not dec.fallback else []
        rec = {
            "qid": q.id,
            "question_type": q.metadata.get("question_type"),
            "sub_questions": dec.sub_questions,
            "well_formed": len(good),
            "ok": len(good) >= 2,
            "fallback": dec.fallback,
            "reasked": dec.reasked,
            "seconds": time.perf_counter() - t0,
            "tokens": dec.usage.total_tokens,
        }
        log_.append(rec)
        done[q.id] = rec
        log.info("[%d/%d] %d well-formed sub-questions", i, len(queries), len(good))


def run_multihop_rag(args: argparse.Namespace) -> str:
    """Decomposition well-formedness on MultiHop-RAG, by question type; records (resumable)
    in ``OUT/decompositions.jsonl``."""
    import asyncio

    from hoprank.evals import ResultsLog, load_dataset

    ds = load_dataset(args.dataset or Path(args.data) / "multihop-rag-facts-500")
    queries = list(ds.queries.values())[: args.limit]
    out = Path(args.out or "runs/agents-multihop-rag")
    out.mkdir(parents=True, exist_ok=True)
    log_ = ResultsLog(out / "decompositions.jsonl")
    done = log_.load()
    with open_engine(args) as engine:
        asyncio.run(_decompose_all(Decomposer(engine), queries, log_, done))
    records = [done[q.id] for q in queries]
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
    return f"{ds.name} decomposition ({args.model}, n={len(records)})\n\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=100, help="first N questions (default 100)")
    add_engine_args(ap)
    ap.add_argument("--systems", default="a,b,c,d", help="comma-separated presets and system files")
    ap.add_argument("--dataset", default=None, help="a QA dataset folder (default: the shared HotpotQA set)")
    ap.add_argument("--data", default=str(DATA), help="shared datasets folder")
    ap.add_argument(
        "--out",
        default=None,
        help="one run folder per system under it (default runs/agents); the table to OUT.md",
    )
    ap.add_argument("--overwrite", action="store_true", help="start the run folders over instead of resuming")
    ap.add_argument("--no-cache", action="store_true", help="no LLM-call cache")
    ap.add_argument("--concurrency", type=int, default=1, help="questions in flight per system")
    group = ap.add_argument_group("system parameters (default: the presets')")
    group.add_argument("--depth", type=int, default=None, help="BM25 depth per query and rerank pool (20)")
    group.add_argument("--rrf-k", type=int, default=None, help="RRF k of c/c0 (10)")
    group.add_argument("--original-weight", type=float, default=None, help="RRF weight of the question (2)")
    group.add_argument("--agent-steps", type=int, default=None, help="agent steps (4)")
    group.add_argument("--agent-k", type=int, default=None, help="documents per agent search (5)")
    group.add_argument("--no-answer", action="store_true", help="skip answering (no EM/F1)")
    group.add_argument("--no-bridge", action="store_true", help="c/c0 without the bridge stage")
    group.add_argument("--ranker", default=None, help="reranker of b and c (first)")
    group.add_argument(
        "--ranker-param", "--first-param", dest="ranker_param", action="append", default=[], help="key=value"
    )
    group.add_argument("-p", "--param", action="append", default=[], help="any system override key=value")
    ap.add_argument(
        "--multihop-rag", action="store_true", help="decomposition quality on MultiHop-RAG instead"
    )
    ap.add_argument("--report", nargs="+", metavar="JSONL", help="run nothing: the table of saved records")
    ap.add_argument("--common", action="store_true", help="with --report: only questions every system has")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "transformers", "hoprank"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("bm25s").addFilter(lambda r: r.levelno >= logging.WARNING)  # it sets DEBUG on import

    t0 = time.perf_counter()
    if args.report:
        table = report_table(args)
    elif args.multihop_rag:
        table = run_multihop_rag(args)
    else:
        table = run_systems(args)
    if not args.report:
        table += f"\n\nTotal wall time {time.perf_counter() - t0:.0f} s."
    print(table)
    out = args.out or (
        None if args.report else "runs/agents-multihop-rag" if args.multihop_rag else "runs/agents"
    )
    if out:
        Path(f"{out}.md").write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
