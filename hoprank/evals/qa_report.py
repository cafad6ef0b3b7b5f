"""The outputs of a finished QA run: ``questions.jsonl``, ``run.trec``, ``traces.jsonl``,
``metrics.json``, ``report.md`` and the plots, computed from the ``results.jsonl`` records
(so a metric fix re-scores saved answers), and :func:`qa_table`, the benchmark's table
of several QA runs.

``metrics.json`` has the ranker runs' shape where it overlaps (``metrics``, ``aggregate``,
``per_query``, ``latency``, ``usage``, ``breakdown``, ``relevance_level``...), so
``hoprank compare`` reads both; ``first_stage`` is empty (a QA system has none).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hoprank._fsio import atomic_write, write_json_atomic
from hoprank.evals.dataset import Dataset
from hoprank.evals.metrics import exact_match, f1_score, mean_metrics
from hoprank.evals.qa_metrics import hop_count, qa_question_metrics
from hoprank.evals.qa_steps import render_step_costs, step_costs
from hoprank.evals.report import (
    conventions_line,
    latency_summary,
    measured_latency,
    metric_breakdowns,
    plot_metric_bars,
    plot_quality_latency,
    render_breakdowns,
)
from hoprank.runs import write_run

__all__ = ["QA_KS", "compute_qa_metrics", "qa_table", "question_rows", "render_qa_report", "write_qa_outputs"]

QA_KS = (2, 5, 10)
_ORDER = (
    *(f"support_recall@{k}" for k in QA_KS),
    *(f"passage_recall@{k}" for k in QA_KS),
    "mrr@10",
    "em",
    "f1",
    "citation_precision",
    "citation_recall",
    "agent_em",
    "agent_f1",
)


def _question_metrics(ds: Dataset, qid: str, rec: Mapping[str, Any]) -> dict[str, float]:
    q = ds.queries[qid]
    row = qa_question_metrics(
        [d for d, _ in rec["ranked"]],
        ds.gold(qid),
        prediction=rec.get("answer"),
        answers=q.answers,
        cited=rec.get("citations"),
        ks=QA_KS,
    )
    info = rec.get("info") or {}
    if "agent_answer" in info and q.answers and info.get("answered_by") == "answerer":
        own = info["agent_answer"] or ""
        row["agent_em"] = exact_match(own, q.answers)
        row["agent_f1"] = f1_score(own, q.answers)
    return row


def _cost(rec: Mapping[str, Any]) -> dict[str, Any]:
    u, a = rec["usage"], rec["answer_usage"]
    tokens = u["prompt_tokens"] + u["completion_tokens"]
    answer_tokens = a["prompt_tokens"] + a["completion_tokens"]
    return {
        "seconds": float(rec["seconds"]),
        "system_seconds": float(u["seconds"]),
        "answer_seconds": float(a["seconds"]),
        "prompt_tokens": int(u["prompt_tokens"] + a["prompt_tokens"]),
        "completion_tokens": int(u["completion_tokens"] + a["completion_tokens"]),
        "tokens": int(tokens + answer_tokens),
        "system_tokens": int(tokens),
        "answer_tokens": int(answer_tokens),
        "llm_calls": int(u["llm_calls"] + a["llm_calls"]),
        "cache_hits": int(rec["cache"]["hits"]),
        "cached": bool(rec.get("cached")),
    }


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else 0.0


def _system_stats(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the system did: decompositions, bridge answers, agent states and steps."""
    infos = [r.get("info") or {} for r in records]
    out: dict[str, Any] = {}
    subs = [i for i in infos if "sub_questions" in i]
    if subs:
        out["decomposition"] = {
            "mean_sub_questions": _mean([len(i["sub_questions"]) for i in subs]),
            "fallbacks": sum(bool(i.get("decompose_fallback")) for i in subs),
        }
    bridged = [i for i in infos if "bridge" in i]
    if bridged:
        out["bridge"] = {"answered": sum(i["bridge"] is not None for i in bridged), "n": len(bridged)}
    agent = [i for i in infos if "state" in i]
    if agent:
        out["agent"] = {
            "states": dict(Counter(str(i["state"]) for i in agent)),
            "mean_steps": _mean([float(i.get("steps") or 0) for i in agent]),
        }
    return out


def compute_qa_metrics(
    ds: Dataset, qids: Sequence[str], records: Mapping[str, Mapping[str, Any]], label: str
) -> dict[str, Any]:
    """Per-question and mean QA metrics, cost and what the system did (``metrics.json``)."""
    per_query = {q: _question_metrics(ds, q, records[q]) for q in qids}
    present = {m for row in per_query.values() for m in row}
    metrics = [m for m in _ORDER if m in present]
    cost = {q: _cost(records[q]) for q in qids}
    n = max(1, len(qids))

    def total(key: str) -> int:
        return int(sum(c[key] for c in cost.values()))

    return {
        "task": "qa",
        "label": label,
        "metrics": metrics,
        "relevance_level": ds.relevance_level,
        "relevance_source": ds.declared_relevance_source,
        "n_queries": len(qids),
        "n_judged": sum(1 for q in qids if ds.gold(q)),
        "aggregate": mean_metrics(per_query),
        "first_stage": {},
        "latency": {
            **latency_summary(cost),
            "system_mean_s": _mean([c["system_seconds"] for c in cost.values()]),
            "answer_mean_s": _mean([c["answer_seconds"] for c in cost.values()]),
        },
        "usage": {
            "prompt_tokens": total("prompt_tokens"),
            "completion_tokens": total("completion_tokens"),
            "llm_calls": total("llm_calls"),
            "tokens_per_query": total("tokens") / n,
            "system_tokens_per_query": total("system_tokens") / n,
            "answer_tokens_per_query": total("answer_tokens") / n,
            "cache_hits": total("cache_hits"),
            "cached_questions": sum(1 for q in qids if records[q].get("cached")),
            "fallbacks": 0,
        },
        "system_stats": _system_stats([records[q] for q in qids]),
        "step_costs": step_costs([records[q] for q in qids]),
        "breakdown": metric_breakdowns(ds, per_query),
        "per_query": per_query,
        "per_query_cost": cost,
    }


def question_rows(
    ds: Dataset, qids: Sequence[str], records: Mapping[str, Mapping[str, Any]], m: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One flat row per question for ``questions.jsonl``: the retrieved ids, the answer and
    citations, every metric, the cost, the hop count and type when the dataset has them,
    and what the system did."""
    rows = []
    for q in qids:
        rec, query = records[q], ds.queries[q]
        row: dict[str, Any] = {
            "qid": q,
            "question": query.text,
            "gold_answers": query.answers,
            "supporting": sorted(ds.gold(q)),
            "retrieved": [d for d, _ in rec["ranked"][:20]],
            "answer": rec.get("answer"),
            "citations": rec.get("citations"),
            **m["per_query"][q],
            **m["per_query_cost"][q],
            "cached": bool(rec.get("cached")),
        }
        hops = hop_count(query)
        if hops is not None:
            row["hops"] = hops
        for key in ("type", "question_type"):
            if key in query.metadata:
                row[key] = query.metadata[key]
        row.update({k: v for k, v in (rec.get("info") or {}).items() if k not in row})
        rows.append(row)
    return rows


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _stats_lines(stats: Mapping[str, Any]) -> list[str]:
    lines = []
    if "decomposition" in stats:
        d = stats["decomposition"]
        lines.append(
            f"- decomposition: {d['mean_sub_questions']:.2f} sub-questions, {d['fallbacks']} fallbacks"
        )
    if "bridge" in stats:
        b = stats["bridge"]
        lines.append(f"- bridge: a usable short answer for {b['answered']} of {b['n']} questions")
    if "agent" in stats:
        a = stats["agent"]
        lines.append(f"- agent: states {a['states']}, {a['mean_steps']:.2f} steps on average")
    return lines


def render_qa_report(m: Mapping[str, Any], manifest: Mapping[str, Any], plots: Sequence[str]) -> str:
    cfg, system = manifest["config"], manifest["system"]
    prompts = ", ".join(f"{p['role']} `{p['ref']}`" for p in manifest.get("prompts") or []) or "(none)"
    model = manifest.get("engine") and cfg.get("model")
    lines = [
        f"# hoprank QA eval: {m['label']}",
        "",
        f"- dataset: `{manifest['dataset']['name']}` (hash `{manifest['dataset']['hash']}`), "
        f"{m['n_queries']} questions ({m['n_judged']} with supporting passages), {conventions_line(m)}",
        f"- system: `{system['name']}` {system['description']}: {system['summary']}",
        f"- config: `{json.dumps(cfg['system'], sort_keys=True)}`",
        f"- model: `{model}`"
        + (f" (sha256 `{manifest['model_sha256']}`)" if manifest.get("model_sha256") else "")
        if model
        else "- model: (none: no LLM calls)",
        f"- prompts: {prompts}",
        f"- hoprank {manifest['environment']['hoprank']}, python {manifest['environment']['python']}",
        *_stats_lines(m.get("system_stats") or {}),
        "",
        "| metric | mean |",
        "|---|---:|",
        *(f"| {metric} | {_fmt(m['aggregate'].get(metric))} |" for metric in m["metrics"]),
    ]
    lat, use = m["latency"], m["usage"]
    lines += [
        "",
        "| cost | value |",
        "|---|---:|",
        f"| seconds / question (mean: system + answer) | {lat['mean_s']:.3f} |",
        f"| seconds / question (system, answer) | {lat['system_mean_s']:.3f}, {lat['answer_mean_s']:.3f} |",
        f"| seconds / question (p50, p90) | {lat['p50_s']:.3f}, {lat['p90_s']:.3f} |",
        f"| tokens / question (system, answer) | {use['system_tokens_per_query']:.1f}, {use['answer_tokens_per_query']:.1f} |",
        f"| LLM calls | {use['llm_calls']} |",
        f"| questions replayed (partly) from the LLM cache | {use['cached_questions']} |",
    ]
    cache = manifest.get("cache")
    if cache:
        lines.append(f"| cache hits / misses | {cache['hits']} / {cache['misses']} |")
    lines += render_step_costs(m.get("step_costs") or {})
    lines.append("")
    lines += render_breakdowns(m.get("breakdown") or {}, m["metrics"])
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _headline(metrics: Sequence[str]) -> str:
    for name in ("support_recall@5", "f1", "mrr@10"):
        if name in metrics:
            return name
    return metrics[0] if metrics else "support_recall@5"


def _write_plots(run_dir: Path, m: Mapping[str, Any]) -> list[str]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    if not m["metrics"]:
        return []
    label = m["label"]
    plot_metric_bars({label: m["aggregate"]}, m["metrics"], run_dir / "metrics.png")
    head = _headline(m["metrics"])
    mean_s, cloud = measured_latency(m, head)
    points = {label: (mean_s, m["aggregate"].get(head, 0.0))}
    plot_quality_latency(points, head, run_dir / "quality_latency.png", {label: cloud})
    return ["metrics.png", "quality_latency.png"]


def write_qa_outputs(
    run_dir: Path,
    ds: Dataset,
    qids: Sequence[str],
    records: Mapping[str, Mapping[str, Any]],
    manifest: dict[str, Any],
    *,
    plots: bool = True,
) -> dict[str, Any]:
    """Write the run's outputs (see the module docstring); return the metrics."""
    label = str(manifest.get("label") or manifest["system"]["name"])
    write_run(
        run_dir / "run.trec",
        {q: [d for d, _ in records[q]["ranked"]] for q in qids},
        tag=manifest["system"]["name"],
    )
    with atomic_write(run_dir / "traces.jsonl") as f:
        for q in qids:
            f.write(json.dumps({"qid": q, "trace": records[q].get("trace", [])}, ensure_ascii=False) + "\n")
    m = compute_qa_metrics(ds, qids, records, label)
    with atomic_write(run_dir / "questions.jsonl") as f:
        for row in question_rows(ds, qids, records, m):
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    write_json_atomic(run_dir / "metrics.json", m, default=str)
    names = _write_plots(run_dir, m) if plots else []
    with atomic_write(run_dir / "report.md") as f:
        f.write(render_qa_report(m, manifest, names))
    return m


_TABLE = (
    ("R@2", "support_recall@2"),
    ("R@5", "support_recall@5"),
    ("R@10", "support_recall@10"),
    ("MRR@10", "mrr@10"),
    ("EM", "em"),
    ("F1", "f1"),
)


def qa_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The benchmark's table of QA runs (``metrics.json`` contents, one per system):
    support recall@2/5/10, MRR@10, EM/F1, and seconds and tokens per question for the
    system and for answering apart."""
    head = "| system | n | " + " | ".join(c for c, _ in _TABLE) + " | s/q | tok/q | ans s/q | ans tok/q |"
    lines = [head, "|" + "---|" * (len(_TABLE) + 6)]
    for m in runs:
        cells = [_fmt3(m["aggregate"].get(key)) for _, key in _TABLE]
        lat, use = m["latency"], m["usage"]
        answered = use.get("answer_tokens_per_query", 0.0) > 0
        cells += [
            f"{lat['system_mean_s']:.1f}",
            f"{use['system_tokens_per_query']:,.0f}",
            f"{lat['answer_mean_s']:.1f}" if answered else "–",
            f"{use['answer_tokens_per_query']:,.0f}" if answered else "–",
        ]
        lines.append(f"| {m['label']} | {m['n_queries']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt3(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"
