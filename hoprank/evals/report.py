"""The outputs of a finished run: ``run.trec``, ``traces.jsonl``, ``metrics.json``,
``report.md`` and PNG plots (matplotlib, Agg backend, no pyplot state)."""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hoprank._fsio import atomic_write, write_json_atomic
from hoprank.evals.dataset import Dataset
from hoprank.evals.metrics import DEFAULT_METRICS, QA_METRICS, canonical_metrics, evaluate, mean_metrics
from hoprank.evals.qa_metrics import breakdown_by
from hoprank.runs import Run, write_run

__all__ = [
    "BREAKDOWN_KEYS",
    "cache_note",
    "compute_metrics",
    "conventions_line",
    "latency_summary",
    "measured_latency",
    "metric_breakdowns",
    "plot_metric_bars",
    "plot_quality_latency",
    "write_outputs",
]

logger = logging.getLogger(__name__)


def default_metrics(ds: Dataset, qids: Sequence[str], records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    metrics = list(DEFAULT_METRICS)
    if any(ds.queries[q].supporting for q in qids):
        metrics += QA_METRICS
    if any("answer" in records.get(q, {}) for q in qids):
        metrics += ["em", "f1"]
    return metrics


BREAKDOWN_KEYS = ("hops", "type", "question_type")
"""Query metadata keys that metrics are broken down by, when a dataset has them."""


def metric_breakdowns(
    ds: Dataset, per_query: Mapping[str, Mapping[str, float]], keys: Sequence[str] = BREAKDOWN_KEYS
) -> dict[str, dict[str, dict[str, float]]]:
    """``{key: {group: {metric: mean, "n": count}}}`` for each key that splits the questions
    into at least two groups (hop counts, question types); keys the dataset lacks are left out."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key in keys:
        groups = breakdown_by(per_query, ds, key)
        if len(groups) >= 2:
            out[key] = groups
    return out


def latency_summary(cost: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Seconds per query from ``per_query_cost`` rows (``seconds``, ``cached``): mean, p50,
    p90 and total over all queries, and ``measured_queries`` / ``measured_mean_s`` over the
    queries that made every LLM call (none came from the cache; None when there is none)."""
    secs = [float(c["seconds"]) for c in cost.values()]
    measured = [float(c["seconds"]) for c in cost.values() if not c["cached"]]
    return {
        "mean_s": statistics.fmean(secs) if secs else 0.0,
        "p50_s": _percentile(secs, 50),
        "p90_s": _percentile(secs, 90),
        "total_s": sum(secs),
        "measured_queries": len(measured),
        "measured_mean_s": statistics.fmean(measured) if measured else None,
    }


def _percentile(xs: Sequence[float], p: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    i = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[i]


def compute_metrics(
    ds: Dataset,
    qids: Sequence[str],
    first_stage: Run,
    records: Mapping[str, Mapping[str, Any]],
    metrics: Sequence[str] | None,
    label: str,
) -> dict[str, Any]:
    """Aggregate and per-query metrics of the reranked lists and of the first stage."""
    metrics = canonical_metrics(metrics) if metrics else default_metrics(ds, qids, records)
    reranked = {q: [d for d, _ in records[q]["ranked"]] for q in qids}
    initial = {q: [d for d, _ in first_stage.get(q, [])] for q in qids}
    gold = {q: ds.gold(q) for q in qids}
    gold_answers = {q: ds.queries[q].answers for q in qids}
    answers = {q: records[q]["answer"] for q in qids if "answer" in records[q]}
    kw: dict[str, Any] = {"relevance_level": ds.relevance_level, "gold": gold}
    per_query = evaluate(reranked, ds.qrels, metrics, answers=answers, gold_answers=gold_answers, **kw)
    fs_metrics = [m for m in metrics if m not in ("em", "f1")]
    fs_per_query = evaluate(initial, ds.qrels, fs_metrics, **kw)
    cost = {
        q: {
            "seconds": float(records[q]["usage"].get("seconds", 0.0)),
            "prompt_tokens": int(records[q]["usage"].get("prompt_tokens", 0)),
            "completion_tokens": int(records[q]["usage"].get("completion_tokens", 0)),
            "llm_calls": int(records[q]["usage"].get("llm_calls", 0)),
            "fallbacks": int(records[q].get("fallbacks", 0)),
            "cached": bool(records[q].get("cached")),
        }
        for q in qids
    }
    latency = latency_summary(cost)
    totals = {
        k: sum(c[k] for c in cost.values()) for k in ("prompt_tokens", "completion_tokens", "llm_calls")
    }
    return {
        "label": label,
        "metrics": metrics,
        "relevance_level": ds.relevance_level,
        "relevance_source": ds.declared_relevance_source,
        "n_queries": len(qids),
        "n_judged": sum(1 for q in qids if ds.qrels.get(q)),
        "aggregate": mean_metrics(per_query),
        "first_stage": mean_metrics(fs_per_query),
        "latency": latency,
        "usage": {
            **totals,
            "tokens_per_query": (totals["prompt_tokens"] + totals["completion_tokens"]) / max(1, len(qids)),
            "fallbacks": sum(c["fallbacks"] for c in cost.values()),
            "cached_queries": len(qids) - latency["measured_queries"],
        },
        "breakdown": metric_breakdowns(ds, per_query),
        "per_query": per_query,
        "first_stage_per_query": fs_per_query,
        "per_query_cost": cost,
    }


def _figure(width: float = 7.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_metric_bars(systems: Mapping[str, Mapping[str, float]], metrics: Sequence[str], path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per system."""
    metrics = [m for m in metrics if any(m in s for s in systems.values())]
    fig = _figure(max(6.0, 1.1 * len(metrics) * max(1, len(systems)) ** 0.5 + 2), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    n = max(1, len(systems))
    width = 0.8 / n
    for i, (label, vals) in enumerate(systems.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(metrics))]
        ax.bar(xs, [vals.get(m, 0.0) for m in metrics], width=width, label=label)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels(metrics, rotation=30, ha="right")
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("score")
    ax.set_title("metric per system")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_quality_latency(
    points: Mapping[str, tuple[float, float]],
    metric: str,
    path: Path,
    per_query: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> Path:
    """Quality (``metric``) against mean seconds per query, one point per system;
    optional per-query clouds (seconds, value) drawn faintly behind."""
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for label, pts in (per_query or {}).items():
        if pts:
            ax.scatter(
                [p[0] for p in pts], [p[1] for p in pts], s=10, alpha=0.25, label=f"{label} (per query)"
            )
    for label, (secs, val) in points.items():
        ax.scatter([secs], [val], s=60, marker="D", label=label)
        ax.annotate(label, (secs, val), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.ticklabel_format(style="sci", axis="x", scilimits=(-2, 4))
    ax.set_xlabel("seconds per query")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs latency")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _headline(metrics: Mapping[str, float]) -> str:
    for m in ("ndcg@10", "support_recall@5", "ndcg@5", "recall@10"):
        if m in metrics:
            return m
    return next(iter(metrics), "ndcg@10")


def write_plots(run_dir: Path, m: Mapping[str, Any]) -> list[str]:
    """metrics.png and quality_latency.png for one run (skipped without matplotlib)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.warning("matplotlib is not installed: no plots (pip install 'hoprank[eval]')")
        return []
    label = m["label"]
    systems = {"first stage": m["first_stage"], label: m["aggregate"]}
    plot_metric_bars(systems, m["metrics"], run_dir / "metrics.png")
    head = _headline(m["aggregate"])
    mean_s, cloud = measured_latency(m, head)
    points = {
        "first stage": (0.0, m["first_stage"].get(head, 0.0)),
        label: (mean_s, m["aggregate"].get(head, 0.0)),
    }
    plot_quality_latency(points, head, run_dir / "quality_latency.png", {label: cloud})
    return ["metrics.png", "quality_latency.png"]


def measured_latency(m: Mapping[str, Any], head: str) -> tuple[float, list[tuple[float, float]]]:
    """A run's mean seconds per query and its ``(seconds, head metric)`` cloud, over the
    queries whose every LLM call was computed: replays from the LLM cache took ~0 s and
    would drag the quality-latency plot to the left (all of them when nothing was measured)."""
    cost = m["per_query_cost"]
    rows = [(q, row) for q, row in m["per_query"].items() if head in row]
    measured = [(cost[q]["seconds"], row[head]) for q, row in rows if not cost[q].get("cached")]
    cloud = measured or [(cost[q]["seconds"], row[head]) for q, row in rows]
    mean_s = m["latency"].get("measured_mean_s")
    return (float(mean_s) if mean_s is not None else float(m["latency"]["mean_s"])), cloud


def conventions_line(m: Mapping[str, Any]) -> str:
    """How binary metrics were counted, to print with them: ``relevance level 2 (dataset.json)``.

    ``m`` is ``metrics.json`` (or anything with ``relevance_level`` and, for runs made since
    the level is declared, ``relevance_source``)."""
    src = m.get("relevance_source")
    return f"relevance level {m['relevance_level']}" + (f" ({src})" if src else "")


def cache_note(m: Mapping[str, Any]) -> str:
    """What a run replayed from the LLM cache means for its seconds (``m``: ``metrics.json``);
    empty when no query was."""
    n = int(m.get("usage", {}).get("cached_queries", 0))
    if not n:
        return ""
    k = int(m.get("latency", {}).get("measured_queries", 0))
    return f"{n} of {m['n_queries']} queries were replayed (wholly or partly) from the LLM cache: " + (
        f"their seconds are not measured; s/query is measured on the {k} uncached queries"
        if k
        else "no query was timed uncached, so s/query is not a measurement"
    )


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def render_report(m: Mapping[str, Any], manifest: Mapping[str, Any], plots: Sequence[str]) -> str:
    cfg = manifest["config"]
    lines = [
        f"# hoprank eval: {m['label']}",
        "",
        f"- dataset: `{manifest['dataset']['name']}` (hash `{manifest['dataset']['hash']}`), "
        f"{m['n_queries']} queries ({m['n_judged']} judged"
        + (f"; --limit skipped {m['skipped_unjudged']} without qrels" if m.get("skipped_unjudged") else "")
        + f"), {conventions_line(m)}",
        f"- first stage: `{manifest['first_stage']['name']}`, depth {cfg['depth']}",
        f"- ranker: `{cfg['ranker']}` {json.dumps(cfg['ranker_params']) if cfg['ranker_params'] else ''}",
        f"- model: `{cfg['model']}`"
        + (f" (sha256 `{manifest['model_sha256']}`)" if manifest.get("model_sha256") else ""),
        f"- prompt: `{manifest['prompt']['ref']}`" if manifest.get("prompt") else "- prompt: (none)",
        f"- hoprank {manifest['environment']['hoprank']}, python {manifest['environment']['python']}",
        "",
        "| metric | first stage | reranked | Δ |",
        "|---|---:|---:|---:|",
    ]
    for metric in m["metrics"]:
        a = m["aggregate"].get(metric)
        b = m["first_stage"].get(metric)
        delta = a - b if a is not None and b is not None else None
        lines.append(f"| {metric} | {_fmt(b)} | {_fmt(a)} | {'' if delta is None else f'{delta:+.4f}'} |")
    lat, use = m["latency"], m["usage"]
    n_cached = int(use.get("cached_queries", 0))
    lines += [""]
    if n_cached:
        lines += [f"> {cache_note(m)}", ""]
    lines += [
        "| cost | value |",
        "|---|---:|",
    ]
    if n_cached:
        measured = lat.get("measured_mean_s")
        lines += [
            f"| seconds / query (mean, measured on {lat.get('measured_queries', 0)} uncached queries) | "
            + ("n/a" if measured is None else f"{measured:.3f}")
            + " |",
            f"| seconds / query (mean over all, cached included: not a measurement) | {lat['mean_s']:.3f} |",
        ]
    else:
        lines += [
            f"| seconds / query (mean) | {lat['mean_s']:.3f} |",
            f"| seconds / query (p50, p90) | {lat['p50_s']:.3f}, {lat['p90_s']:.3f} |",
        ]
    lines += [
        f"| tokens / query | {use['tokens_per_query']:.1f} |",
        f"| LLM calls | {use['llm_calls']} |",
        f"| fallbacks (unparsed outputs) | {use['fallbacks']} |",
    ]
    cache = manifest.get("cache")
    if cache:
        lines.append(f"| cache hits / misses | {cache['hits']} / {cache['misses']} |")
    lines.append("")
    lines += render_breakdowns(m.get("breakdown") or {}, m["metrics"])
    for p in plots:
        lines.append(f"![{p}]({p})")
    return "\n".join(lines) + "\n"


def render_breakdowns(
    breakdowns: Mapping[str, Mapping[str, Mapping[str, float]]], metrics: Sequence[str]
) -> list[str]:
    """Markdown tables of :func:`metric_breakdowns` (one per key), each followed by a blank line."""
    lines: list[str] = []
    for key, groups in breakdowns.items():
        cols = [mt for mt in metrics if any(mt in g for g in groups.values())]
        lines += [
            f"By {key}:",
            "",
            f"| {key} | n | " + " | ".join(cols) + " |",
            "|---|---:|" + "---:|" * len(cols),
        ]
        for name, g in groups.items():
            cells = " | ".join(_fmt(g.get(mt)) for mt in cols)
            lines.append(f"| {name} | {int(g['n'])} | {cells} |")
        lines.append("")
    return lines


def write_outputs(
    run_dir: Path,
    ds: Dataset,
    qids: Sequence[str],
    first_stage: Run,
    records: Mapping[str, Mapping[str, Any]],
    manifest: dict[str, Any],
    *,
    metrics: Sequence[str] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Write run.trec, traces.jsonl, metrics.json, report.md and plots; return the metrics."""
    cfg = manifest["config"]
    label = cfg.get("name") or manifest.get("label") or cfg["ranker"]
    write_run(
        run_dir / "run.trec",
        {q: [d for d, _ in records[q]["ranked"]] for q in qids},
        tag=label.replace(" ", "_"),
    )
    with atomic_write(run_dir / "traces.jsonl") as f:
        for q in qids:
            f.write(json.dumps({"qid": q, "trace": records[q].get("trace", [])}, ensure_ascii=False) + "\n")
    m = compute_metrics(ds, qids, first_stage, records, metrics, label)
    m["skipped_unjudged"] = int(manifest.get("queries", {}).get("skipped_unjudged", 0))
    write_json_atomic(run_dir / "metrics.json", m, default=str)
    names = write_plots(run_dir, m) if plots else []
    (run_dir / "report.md").write_text(render_report(m, manifest, names), encoding="utf-8")
    return m
