"""Side-by-side comparison of run folders with paired significance tests.

For every metric: the mean of each run over the queries all runs share, and for each
run against the first (the baseline): the mean per-query delta, wins/losses/ties, and
p-values of a paired permutation test (``scipy.stats.permutation_test`` with
``permutation_type="samples"``, the mean difference as statistic, exact when the
number of sign flips is small), the Wilcoxon signed-rank test and the paired t-test.

Runs over different query sets are compared on their intersection, and the
comparison says so in ``notes`` (``strict=True`` refuses instead). Runs over datasets
with different content hashes are refused unless ``allow_different_datasets``.

QA runs (``hoprank eval --task qa``, ``metrics.json`` with ``"task": "qa"``) are compared on
their per-question metrics (support recall, passage recall, MRR@10, EM/F1, citations). A
QA system need not have every metric (BM25 alone gives no answer): each metric is
compared over the runs that have it, against the first of them, which leads its
``means`` (the notes say when that is not the overall baseline).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from hoprank.errors import ConfigError
from hoprank.evals.metrics import canonical_metrics

__all__ = [
    "CACHED_MARK",
    "Comparison",
    "MetricComparison",
    "RunSummary",
    "compare",
    "paired_tests",
    "params_label",
]


CACHED_MARK = "†"
"""Marks the s/query of a run with queries replayed from the LLM cache."""


class RunSummary(BaseModel):
    """One compared run."""

    label: str
    path: str
    dataset_hash: str | None
    n_queries: int
    latency_mean_s: float
    tokens_per_query: float
    first_stage: dict[str, float] = Field(default_factory=dict)
    relevance_level: int | None = None
    relevance_source: str | None = None
    cached_queries: int = 0
    """Queries (or QA questions) replayed wholly or partly from the LLM cache: when any
    were, ``latency_mean_s`` is not a measurement (``s_per_query_cell`` marks it †)."""

    def s_per_query_cell(self) -> str:
        """``latency_mean_s`` to three decimals, marked ``†`` when some queries came from the cache."""
        return f"{self.latency_mean_s:.3f}" + (CACHED_MARK if self.cached_queries else "")


class MetricComparison(BaseModel):
    """One metric across runs. Dicts are keyed by run label; the baseline has no delta."""

    metric: str
    n: int
    means: dict[str, float]
    delta: dict[str, float] = Field(default_factory=dict)
    wins: dict[str, int] = Field(default_factory=dict)
    losses: dict[str, int] = Field(default_factory=dict)
    ties: dict[str, int] = Field(default_factory=dict)
    p_permutation: dict[str, float | None] = Field(default_factory=dict)
    p_wilcoxon: dict[str, float | None] = Field(default_factory=dict)
    p_ttest: dict[str, float | None] = Field(default_factory=dict)

    def cell(self, label: str, *, alpha: float = 0.05, mark: Callable[[float], str] | None = None) -> str:
        """Run ``label``'s mean and, against the baseline, the mean delta (marked when the
        paired permutation test gives p < ``alpha``: ``*``, or ``mark(delta)``), the
        p-value and wins/losses/ties: ``0.6120 (+0.0450*, p=0.012, W/L/T 9/3/8)``."""
        if label not in self.means:  # a run without this metric (a QA system with no answerer)
            return "–"
        text = f"{self.means[label]:.4f}"
        if label not in self.delta:
            return text
        delta, p = self.delta[label], self.p_permutation.get(label)
        star = ("*" if mark is None else mark(delta)) if p is not None and p < alpha else ""
        wlt = f"{self.wins[label]}/{self.losses[label]}/{self.ties[label]}"
        return f"{text} ({delta:+.4f}{star}, p={_p(p)}, W/L/T {wlt})"


class Comparison(BaseModel):
    """The result of :func:`compare`."""

    baseline: str
    runs: list[RunSummary]
    queries: list[str]
    metrics: list[MetricComparison]
    notes: list[str] = Field(default_factory=list)

    def to_markdown(self, *, alpha: float = 0.05) -> str:
        labels = [r.label for r in self.runs]
        lines = [f"# comparison (baseline: {self.baseline})", ""]
        lines += [f"> {n}" for n in self.notes]
        if self.notes:
            lines.append("")
        lines.append("| metric | n | " + " | ".join(labels) + " |")
        lines.append("|---|---:|" + "---:|" * len(labels))
        for mc in self.metrics:
            cells = [mc.cell(lab, alpha=alpha) for lab in labels]
            lines.append(f"| {mc.metric} | {mc.n} | " + " | ".join(cells) + " |")
        lines += ["", "| run | queries | s/query | tokens/query |", "|---|---:|---:|---:|"]
        for r in self.runs:
            lines.append(f"| {r.label} | {r.n_queries} | {r.s_per_query_cell()} | {r.tokens_per_query:.1f} |")
        lines += ["", f"`*`: paired permutation test p < {alpha} against {self.baseline}."]
        if any(r.cached_queries for r in self.runs):
            lines.append(f"{CACHED_MARK}: {CACHED_LEGEND}")
        return "\n".join(lines) + "\n"


def _p(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.3g}")


def _finite(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def paired_tests(
    a: Sequence[float], b: Sequence[float], *, n_resamples: int = 10000, seed: int = 0
) -> dict[str, float | None]:
    """Two-sided paired tests of ``b`` against ``a``: permutation, Wilcoxon, t-test.

    p-values are None where a test is undefined: fewer than 2 pairs; Wilcoxon and t-test
    when every difference is zero (the permutation test gives 1.0); the t-test when every
    difference is the same.
    """
    import numpy as np
    from scipy import stats

    x, y = np.asarray(b, dtype=float), np.asarray(a, dtype=float)
    if len(x) < 2:
        return {"permutation": None, "wilcoxon": None, "ttest": None}

    def mean_diff(u: Any, v: Any, axis: int) -> Any:
        return np.mean(u - v, axis=axis)

    perm = stats.permutation_test(
        (x, y),
        mean_diff,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        random_state=seed,
    )
    out: dict[str, float | None] = {"permutation": _finite(perm.pvalue)}
    if np.all(x == y):
        out.update(wilcoxon=None, ttest=None)
        return out
    out["wilcoxon"] = _finite(stats.wilcoxon(x, y).pvalue)
    # the t statistic is undefined when every difference is the same
    out["ttest"] = None if np.ptp(x - y) == 0 else _finite(stats.ttest_rel(x, y).pvalue)
    return out


def _load(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{run_dir} is not a finished hoprank run (missing {Path(e.filename).name})") from e
    except ValueError as e:
        raise ConfigError(f"{run_dir}: unreadable run files: {e}") from e
    return metrics, manifest


_Loaded = list[tuple[tuple[dict[str, Any], dict[str, Any]], Path]]
"""Per run: (metrics.json, manifest.json) and its folder."""


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= 24 else text[:21] + "..."


def params_label(params: Mapping[str, Any]) -> str:
    """Ranker parameters as ``[k=v,...]`` (sorted; long values shortened), ``""`` when none."""
    return "[" + ",".join(f"{k}={_short(params[k])}" for k in sorted(params)) + "]" if params else ""


def _base_label(m: dict[str, Any], man: dict[str, Any], d: Path) -> str:
    """A run's label: its explicit name as given, else ``ranker/model/prompt[params]``."""
    raw = str(man.get("label") or m.get("label") or d.name)
    cfg = man.get("config") or {}
    if cfg.get("name"):
        return raw
    params = (man.get("ranker") or {}).get("params") or cfg.get("ranker_params") or {}
    return raw + params_label(params) if isinstance(params, dict) else raw


def _labels(loaded: _Loaded) -> list[str]:
    """Each run's label with its ranker parameters, and its first stage when the runs'
    first stages differ; made unique by its folder name, then by its position."""
    raw = [_base_label(m, man, d) for (m, man), d in loaded]
    stages = [str((man.get("first_stage") or {}).get("name") or "") for (_, man), _ in loaded]
    if len(set(stages)) > 1:
        raw = [f"{lab} on {st}" if st else lab for lab, st in zip(raw, stages, strict=True)]
    labels = [
        lab if raw.count(lab) == 1 else f"{lab} ({d.name})" for lab, (_, d) in zip(raw, loaded, strict=True)
    ]
    return [lab if labels.count(lab) == 1 else f"{lab} #{i + 1}" for i, lab in enumerate(labels)]


def _metric_names(requested: Sequence[str] | None, loaded: _Loaded, *, qa: bool) -> list[str]:
    """The metrics to compare: the requested ones (canonical names; a QA metric of the runs,
    such as ``citation_precision``, as given), else those of the first run that every run
    has, or for QA runs every metric at least two runs have, in the runs' order."""
    if requested is not None:
        known = {mt for (m, _), _ in loaded for mt in m.get("metrics", [])}
        return list(dict.fromkeys(mt if mt in known else canonical_metrics([mt])[0] for mt in requested))
    if not qa:
        return [mt for mt in loaded[0][0][0]["metrics"] if all(mt in m["aggregate"] for (m, _), _ in loaded)]
    listed = list(dict.fromkeys(mt for (m, _), _ in loaded for mt in m.get("metrics", [])))
    return [mt for mt in listed if sum(mt in m["aggregate"] for (m, _), _ in loaded) >= 2]


def _compare_metric(
    metric: str, vals: dict[str, list[float]], labels: list[str], *, n_resamples: int, seed: int
) -> MetricComparison:
    """One metric's means, and every run's paired difference from the baseline (``labels[0]``)."""
    mc = MetricComparison(
        metric=metric,
        n=len(vals[labels[0]]),
        means={lab: sum(v) / len(v) for lab, v in vals.items()},
    )
    base = vals[labels[0]]
    for lab in labels[1:]:
        diffs = [y - x for x, y in zip(base, vals[lab], strict=True)]
        mc.delta[lab] = sum(diffs) / len(diffs)
        mc.wins[lab] = sum(1 for d in diffs if d > 1e-12)
        mc.losses[lab] = sum(1 for d in diffs if d < -1e-12)
        mc.ties[lab] = len(diffs) - mc.wins[lab] - mc.losses[lab]
        tests = paired_tests(base, vals[lab], n_resamples=n_resamples, seed=seed)
        mc.p_permutation[lab] = tests["permutation"]
        mc.p_wilcoxon[lab] = tests["wilcoxon"]
        mc.p_ttest[lab] = tests["ttest"]
    return mc


def _summary(label: str, m: dict[str, Any], man: dict[str, Any], path: Path) -> RunSummary:
    return RunSummary(
        label=label,
        path=str(path),
        dataset_hash=man.get("dataset", {}).get("hash"),
        n_queries=int(m.get("n_queries", len(m["per_query"]))),
        latency_mean_s=float(m.get("latency", {}).get("mean_s", 0.0)),
        tokens_per_query=float(m.get("usage", {}).get("tokens_per_query", 0.0)),
        first_stage=m.get("first_stage", {}),
        relevance_level=m.get("relevance_level"),
        relevance_source=m.get("relevance_source"),
        cached_queries=_cached_queries(m),
    )


CACHED_LEGEND = "some queries were replayed from the LLM cache: s/query is not a measurement"


def _cached_queries(m: dict[str, Any]) -> int:
    """Queries (ranker runs) or questions (QA runs) answered partly or wholly from the LLM cache."""
    use = m.get("usage", {})
    return int(use.get("cached_queries", use.get("cached_questions", 0)) or 0)


def compare(
    run_dirs: Sequence[str | os.PathLike[str]],
    *,
    metrics: Sequence[str] | None = None,
    strict: bool = False,
    allow_different_datasets: bool = False,
    n_resamples: int = 10000,
    seed: int = 0,
) -> Comparison:
    """Compare run folders (the first is the baseline). See the module docstring."""
    if len(run_dirs) < 2:
        raise ConfigError("compare needs at least two run folders")
    loaded = [(_load(Path(d)), Path(d)) for d in run_dirs]
    labels = _labels(loaded)
    notes: list[str] = []
    hashes = {man.get("dataset", {}).get("hash") for (_, man), _ in loaded}
    if len(hashes) > 1:
        msg = f"runs are over different datasets (content hashes {sorted(map(str, hashes))})"
        if not allow_different_datasets:
            raise ConfigError(msg)
        notes.append(msg)
    levels = {lab: m.get("relevance_level") for lab, ((m, _), _) in zip(labels, loaded, strict=True)}
    if len({v for v in levels.values() if v is not None}) > 1:
        notes.append(
            f"runs count relevance at different levels {levels}: their binary metrics (MRR, recall, MAP) "
            "are not comparable"
        )
    qsets = [set(m["per_query"]) for (m, _), _ in loaded]
    common = set.intersection(*qsets)
    if any(s != qsets[0] for s in qsets):
        dropped = {lab: len(s - common) for lab, s in zip(labels, qsets, strict=True)}
        msg = f"runs cover different queries: compared on the {len(common)} they share (dropped per run: {dropped})"
        if strict:
            raise ConfigError(msg)
        notes.append(msg)
    if not common:
        raise ConfigError("the runs share no queries")
    order = [q for q in loaded[0][0][0]["per_query"] if q in common]
    qa = any(m.get("task") == "qa" for (m, _), _ in loaded)
    metrics = _metric_names(metrics, loaded, qa=qa)
    out: list[MetricComparison] = []
    for metric in metrics:
        having = [i for i, ((m, _), _) in enumerate(loaded) if not qa or metric in m["aggregate"]]
        if len(having) < 2:
            notes.append(f"metric {metric}: fewer than two runs have it; skipped")
            continue
        qs = [q for q in order if all(metric in loaded[i][0][0]["per_query"][q] for i in having)]
        if not qs:
            notes.append(f"metric {metric}: no query has it in every run; skipped")
            continue
        sub = [labels[i] for i in having]
        if sub[0] != labels[0]:
            notes.append(f"metric {metric}: {labels[0]} has none; compared against {sub[0]}")
        vals = {labels[i]: [float(loaded[i][0][0]["per_query"][q][metric]) for q in qs] for i in having}
        out.append(_compare_metric(metric, vals, sub, n_resamples=n_resamples, seed=seed))
    runs = [_summary(lab, m, man, d) for lab, ((m, man), d) in zip(labels, loaded, strict=True)]
    for r in runs:
        if r.cached_queries:
            notes.append(
                f"{r.label}: {r.cached_queries} of {r.n_queries} queries were replayed from the LLM cache: "
                f"its s/query ({CACHED_MARK}) is not a measurement"
            )
    return Comparison(baseline=labels[0], runs=runs, queries=order, metrics=out, notes=notes)


def write_comparison(comp: Comparison, out_dir: str | os.PathLike[str], *, plots: bool = True) -> list[Path]:
    """comparison.json, comparison.md and (with matplotlib) the two comparison plots."""
    from hoprank._fsio import write_json_atomic
    from hoprank.evals.report import plot_metric_bars, plot_quality_latency

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    write_json_atomic(d / "comparison.json", comp.model_dump(mode="json"), default=str)
    (d / "comparison.md").write_text(comp.to_markdown(), encoding="utf-8")
    written = [d / "comparison.json", d / "comparison.md"]
    if plots and comp.metrics:
        systems = {
            r.label: {mc.metric: mc.means[r.label] for mc in comp.metrics if r.label in mc.means}
            for r in comp.runs
        }
        written.append(
            plot_metric_bars(systems, [mc.metric for mc in comp.metrics], d / "comparison_metrics.png")
        )
        head = next(
            (mc for name in ("ndcg@10", "support_recall@5") for mc in comp.metrics if mc.metric == name),
            comp.metrics[0],
        )
        points = {
            r.label: (r.latency_mean_s, head.means[r.label]) for r in comp.runs if r.label in head.means
        }
        written.append(plot_quality_latency(points, head.metric, d / "comparison_quality_latency.png"))
    return written
