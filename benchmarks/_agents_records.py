"""``agents_hotpotqa.py --report``: the table of the per-question records that the earlier
version of the script saved (``benchmarks/results/agents-hotpotqa-*.jsonl``, one line per
system and question), merged from several files and rescored with the current EM/F1.
New runs write run folders instead (``hoprank eval --task qa``)."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hoprank.agents import PRESETS
from hoprank.evals.dataset import iter_jsonl
from hoprank.evals.metrics import exact_match, f1_score

log = logging.getLogger("agents_hotpotqa")


class Sink:
    """Appends each question's records to ``PREFIX.jsonl`` as soon as they exist (a killed
    run loses at most the question in flight); with ``resume`` the records already there
    are kept and their questions skipped (a torn last line is dropped)."""

    def __init__(self, prefix: str | None, *, resume: bool) -> None:
        self.path = Path(prefix).with_suffix(".jsonl") if prefix else None
        self.done: list[dict[str, Any]] = []
        if self.path is not None and resume and self.path.is_file():
            self.done = [r for _, r in read_records(self.path)]
        self.qids = {r["qid"] for r in self.done}
        self._f: Any = None

    def __enter__(self) -> Sink:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = self.path.open("w", encoding="utf-8")
            for r in self.done:  # rewrite without a torn tail
                self._f.write(json.dumps(r, ensure_ascii=False) + "\n")
            self._f.flush()
        return self

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self._f is not None:
            for r in rows:
                self._f.write(json.dumps(r, ensure_ascii=False) + "\n")
            self._f.flush()

    def __exit__(self, *exc: object) -> None:
        if self._f is not None:
            self._f.close()


def read_jsonl(path: Path, limit: int | None) -> list[dict[str, Any]]:
    """The first ``limit`` objects of a dataset JSONL file (errors name file and line)."""
    return [obj for _, obj in itertools.islice(iter_jsonl(path), limit)]


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, record)`` of a saved records file, skipping
    blank and torn lines (a run killed mid-write) with a warning."""
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError:
            log.warning("skipping a torn line %s:%d", path, i)


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(vals) if vals else None


_RANKER_LABELS = {"first": "FIRST", "icr": "ICR", "rankgpt": "RankGPT", "pointwise": "pointwise"}


def records_table(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    bridge = "" if args.no_bridge else " + bridge"
    label = _RANKER_LABELS.get(args.ranker, args.ranker)
    names = {
        "a": "(a) BM25",
        "b": f"(b) BM25 + {label} top-{args.depth}",
        "c0": f"(c0) decompose{bridge} + BM25 + RRF",
        "c": f"(c) decompose{bridge} + BM25 + RRF + {label}",
        "d": f"(d) MultiHopAgent ({args.agent_steps} steps, k={args.agent_k})",
    }
    cols = ["R@2", "R@5", "R@10", "MRR@10", "EM", "F1", "seconds", "tokens", "ans_seconds", "ans_tokens"]
    head = (
        "| system | n | "
        + " | ".join(c.replace("seconds", "s/q").replace("tokens", "tok/q") for c in cols)
        + " |"
    )
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for s in ("a", "b", "c0", "c", "d"):
        rows = [r for r in records if r["system"] == s]
        if not rows:
            continue
        cells = []
        for c in cols:
            v = _mean(rows, c)
            cells.append(
                "–"
                if v is None
                else (f"{v:.0f}" if "tokens" in c else f"{v:.3f}" if c[0] in "REMF" else f"{v:.1f}")
            )
        lines.append(f"| {names[s]} | {len(rows)} | " + " | ".join(cells) + " |")
    agent_rows = [r for r in records if r["system"] == "d"]
    if agent_rows:
        states = {
            st: sum(r["state"] == st for r in agent_rows) for st in ("answered", "budget_exhausted", "failed")
        }
        lines.append("")
        lines.append(
            f"Agent: states {states}; own-answer EM {_mean(agent_rows, 'agent_EM'):.3f} "
            f"F1 {_mean(agent_rows, 'agent_F1'):.3f}; mean steps {_mean(agent_rows, 'steps'):.2f}"
        )
    by_sys = {s: {r["qid"]: r for r in records if r["system"] == s} for s in ("c0", "c")}
    both = by_sys["c0"].keys() & by_sys["c"].keys()
    if both:
        full = statistics.fmean(by_sys["c0"][q]["seconds"] + by_sys["c"][q]["seconds"] for q in both)
        lines.append("")
        lines.append(
            f"(c) runs after (c0) and reuses its decomposition and bridge (memoised), so its s/q "
            f"above is the rest of the pipeline only; (c) from scratch costs (c0) + (c) = {full:.1f} s/q"
        )
    reused = [r for r in records if r.get("reused_decomposition")]
    if reused:
        lines.append("")
        lines.append(
            f"{len(reused)} (c0)/(c) rows reused saved decompositions and bridge answers "
            "(--reuse-decompositions): their s/q excludes those generations"
        )
    c_rows = [r for r in records if r["system"] in ("c", "c0")]
    if c_rows:
        nsub = statistics.fmean(len(r["sub_questions"]) for r in c_rows)
        fb = sum(bool(r["decompose_fallback"]) for r in c_rows)
        lines.append(
            f"Decomposition (c): mean {nsub:.2f} sub-questions, {fb}/{len(c_rows)} fallbacks; "
            f"RRF k={args.rrf_k}, original weight {args.original_weight}, bridge {'off' if args.no_bridge else 'on'}"
        )
    return "\n".join(lines)


def rescore(records: list[dict[str, Any]], gold: dict[str, list[str]]) -> int:
    """Recompute EM/F1 (Answerer and agent answers) from the saved answer texts with the
    current metric functions, so records saved before a metric fix score as new ones
    do; returns how many values changed."""
    changed = 0
    for r in records:
        golds = gold.get(str(r["qid"]))
        if not golds:
            continue
        for text, em, f1 in (("answer", "EM", "F1"), ("agent_answer", "agent_EM", "agent_F1")):
            if em not in r:
                continue
            pred = r.get(text) or ""
            new = {em: exact_match(pred, golds), f1: f1_score(pred, golds)}
            changed += sum(r[key] != v for key, v in new.items())
            r.update(new)
    return changed


def _preset_defaults(args: argparse.Namespace) -> None:
    """Options left unset take the presets' values (the settings the records were made with)."""
    c, d = PRESETS["c"], PRESETS["d"]
    defaults = {
        "depth": c.pipeline.pool_depth,
        "rrf_k": c.pipeline.rrf_k,
        "original_weight": c.pipeline.original_weight,
        "agent_steps": d.agent.budget.max_steps,
        "agent_k": d.agent.k,
        "ranker": c.ranker,
    }
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def report_table(args: argparse.Namespace) -> str:
    """The table of records saved by earlier runs (``--report``), titled by the dataset."""
    _preset_defaults(args)
    records: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for name in args.report:
        for i, r in read_records(Path(name)):
            key = (str(r["system"]), str(r["qid"]))
            if key in seen:
                raise SystemExit(f"{name}:{i}: system {key[0]} of question {key[1]} is also in {seen[key]}")
            seen[key] = f"{name}:{i}"
            records.append(r)
    rankers = {str(r["ranker"]) for r in records if r.get("ranker")}
    if len(rankers) > 1:
        raise SystemExit(f"records of different rerankers ({', '.join(sorted(rankers))}): report them apart")
    if rankers:
        args.ranker = rankers.pop()
    scope = ""
    if args.common:
        by_sys: dict[str, set[str]] = {}
        for r in records:
            by_sys.setdefault(str(r["system"]), set()).add(str(r["qid"]))
        shared = set.intersection(*by_sys.values()) if by_sys else set()
        records = [r for r in records if str(r["qid"]) in shared]
        scope = f", only those every system ({', '.join(sorted(by_sys))}) answered"
    folder = Path(args.dataset or Path(args.data) / "hotpotqa-dev-distractor-500")
    changed = rescore(
        records, {str(q["id"]): list(q["answers"]) for _, q in iter_jsonl(folder / "queries.jsonl")}
    )
    if changed:
        log.info("rescored %d EM/F1 values with the current metrics", changed)
    n = len({r["qid"] for r in records})
    return (
        f"{folder.name}, full pool BM25, {n} questions{scope}, model {args.model} "
        f"(from {', '.join(args.report)})\n\n" + records_table(records, args)
    )
