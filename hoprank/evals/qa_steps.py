"""Where a QA system's seconds and tokens go: its traces summed by step name.

:func:`step_costs` reads the ``trace`` of each ``results.jsonl`` record (every model call,
search and rerank step records its seconds and usage) and gives, per step name
(``agent.step``, ``retrieve``, ``answer.short``, ``decompose``, ``window``...), the calls,
seconds and tokens per question, with the prompt tokens served from the engine's prefix
KV cache apart. The final answering's steps (the record's ``info.answer_steps`` last ones)
are named ``final <name>``, apart from the same prompt used inside the system (the bridge's
short answers). A wrapper step whose seconds its inner steps already record (``bridge``)
counts its calls but not its seconds. Questions replayed from the LLM cache are left out (their seconds were
not measured). Steps that ran concurrently (sub-questions searched side by side) overlap,
so the rows can add up to more than the wall-clock seconds; ``other_s`` is what no step
recorded when they add up to less.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_step_costs", "step_costs"]

_FIELDS = ("calls", "seconds", "prompt_tokens", "cached_tokens", "completion_tokens")
_WRAPPERS = frozenset({"bridge"})  # step kinds whose seconds are their inner steps'


def step_costs(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"questions": n, "steps": {name: {calls, seconds, ...} per question}, "wall_s",
    "other_s"}`` over the records not replayed from the LLM cache."""
    measured = [r for r in records if not r.get("cached")]
    n = len(measured)
    sums: dict[str, dict[str, float]] = {}
    for rec in measured:
        trace = list(rec.get("trace") or [])
        final = len(trace) - int((rec.get("info") or {}).get("answer_steps") or 0)
        for i, step in enumerate(trace):
            name = str(step.get("name") or step.get("kind") or "?")
            if step.get("kind") == "stop":
                continue
            if i >= final:
                name = f"final {name}"
            row = sums.setdefault(name, dict.fromkeys(_FIELDS, 0.0))
            usage = step.get("usage") or {}
            row["calls"] += 1
            if step.get("kind") not in _WRAPPERS:
                row["seconds"] += float(step.get("seconds") or 0.0)
            for key in _FIELDS[2:]:
                row[key] += float(usage.get(key) or 0)
    per_q = {name: {k: v / max(1, n) for k, v in row.items()} for name, row in sums.items()}
    wall = sum(float(r.get("seconds") or 0.0) for r in measured) / max(1, n)
    stepped = sum(row["seconds"] for row in per_q.values())
    return {
        "questions": n,
        "steps": dict(sorted(per_q.items(), key=lambda kv: -kv[1]["seconds"])),
        "wall_s": wall,
        "other_s": max(0.0, wall - stepped),
    }


def render_step_costs(costs: Mapping[str, Any]) -> list[str]:
    """The report's "Where the seconds go" table (empty when nothing was measured)."""
    if not costs or not costs.get("questions") or not costs.get("steps"):
        return []
    wall = float(costs["wall_s"]) or 1.0
    lines = [
        "",
        f"Where the seconds go (per question, {costs['questions']} measured questions; "
        "concurrent steps overlap):",
        "",
        "| step | calls | s | share | prompt tok | of which prefix-cached | completion tok |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in costs["steps"].items():
        lines.append(
            f"| {name} | {row['calls']:.2f} | {row['seconds']:.2f} | {row['seconds'] / wall:.0%} | "
            f"{row['prompt_tokens']:.0f} | {row['cached_tokens']:.0f} | {row['completion_tokens']:.0f} |"
        )
    lines.append(f"| (not in a step) | | {costs['other_s']:.2f} | {costs['other_s'] / wall:.0%} | | | |")
    lines.append("")
    return lines
