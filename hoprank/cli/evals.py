"""``hoprank eval`` (run an experiment into a run folder) and ``hoprank compare`` (runs
side by side with paired significance tests).

Exit codes: the table in :mod:`hoprank.cli._common`: 0 ok; 2 usage or input errors (bad
options, dataset/config/prompt errors, a missing optional extra); 1 runtime failures
(engine errors, anything else).
"""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from hoprank.cli._common import (
    VERBOSE_OPTION,
    check_model,
    check_ranker,
    fail,
    parse_params,
    ranker_help,
    setup_logging,
)
from hoprank.errors import HoprankError, InvalidInput
from hoprank.llm.spec import EngineSpec

__all__ = ["register"]

logger = logging.getLogger(__name__)


def _default_out(dataset: str, label: str) -> Path:
    import time

    ds = Path(dataset).name or dataset
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in label)
    return Path("runs") / f"{ds}__{safe}__{time.strftime('%Y%m%d-%H%M%S')}"


class Executor(str, Enum):
    """Where ``hoprank eval`` runs the queries."""

    local = "local"
    ray = "ray"


_DATASET: Any = typer.Option(
    ..., "--dataset", "-d", help="Dataset folder/file or sample name (sample-dl19, sample-hotpotqa)."
)
_RANKER: Any = typer.Option("identity", "--ranker", "-r", help=ranker_help("One of: "))
_MODEL: Any = typer.Option(
    None,
    "--model",
    "-m",
    help="Engine spec: pack name, folder, .gguf, openai:<model> "
    "(default for a ranker that needs a model: the default pack, qwen2.5-coder-1.5b).",
)
_FIRST_STAGE: Any = typer.Option(
    None, "--first-stage", help="Run name in the dataset, TREC run file, or retriever:bm25."
)
_DEPTH: Any = typer.Option(100, "--depth", min=1, help="Candidates per query to rerank.")
_LIMIT: Any = typer.Option(None, "--limit", min=1, help="Only the first N queries.")
_OUT: Any = typer.Option(None, "--out", "-o", help="Run folder (resumes when it holds the same experiment).")
_PROMPT: Any = typer.Option(None, "--prompt", help="Prompt name, name@version or YAML path.")
_PARAM: Any = typer.Option(None, "--param", "-p", help="Ranker parameter key=value (repeatable).")
_ENGINE_PARAM: Any = typer.Option(None, "--engine-param", help="Engine parameter key=value (repeatable).")
_CONCURRENCY: Any = typer.Option(1, "--concurrency", "-c", min=1, help="Queries in flight.")
_BASE_URLS: Any = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint(s) (repeatable).")
_EXECUTOR: Any = typer.Option("local", "--executor", help="Where queries run.")
_CACHE: Any = typer.Option(None, "--cache", help="LLM-call cache folder (default $HOPRANK_CACHE/llm-calls).")
_NO_CACHE: Any = typer.Option(False, "--no-cache", help="Do not cache LLM calls.")
_METRICS: Any = typer.Option(None, "--metric", help="Metrics to report (repeatable), e.g. ndcg@10.")
_NAME: Any = typer.Option(None, "--name", help="Display name of this run.")
_OVERWRITE: Any = typer.Option(
    False, "--overwrite", help="Start over: remove the run folder's earlier outputs instead of resuming."
)
_JSON: Any = typer.Option(False, "--json", help="Print the metrics as JSON.")
_PROGRESS: Any = typer.Option(True, "--progress/--no-progress", help="Progress bar (on a terminal).")


def eval_cmd(
    dataset: str = _DATASET,
    ranker: str = _RANKER,
    model: str | None = _MODEL,
    first_stage: str | None = _FIRST_STAGE,
    depth: int = _DEPTH,
    limit: int | None = _LIMIT,
    out: Path | None = _OUT,
    prompt: str | None = _PROMPT,
    param: list[str] | None = _PARAM,
    engine_param: list[str] | None = _ENGINE_PARAM,
    concurrency: int = _CONCURRENCY,
    base_url: list[str] | None = _BASE_URLS,
    executor: Executor = _EXECUTOR,
    cache: Path | None = _CACHE,
    no_cache: bool = _NO_CACHE,
    metric: list[str] | None = _METRICS,
    name: str | None = _NAME,
    overwrite: bool = _OVERWRITE,
    as_json: bool = _JSON,
    progress: bool = _PROGRESS,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Rerank a dataset's first stage with a ranker and score it; writes a run folder."""
    setup_logging(verbose)
    from hoprank.evals.config import ExperimentConfig
    from hoprank.evals.runner import run_experiment

    try:
        ranker_params = parse_params(param)
        spec = _engine(ranker, ranker_params, prompt, model, base_url)
        engine_params = {**parse_params(engine_param, "--engine-param"), **spec.engine_kwargs(secrets=False)}
        config = ExperimentConfig(
            dataset=dataset,
            first_stage=first_stage,
            depth=depth,
            ranker=ranker,
            ranker_params=ranker_params,
            model=spec.model,
            engine_params=engine_params,
            prompt=prompt,
            limit=limit,
            metrics=metric or None,
            concurrency=concurrency,
            executor=executor.value,
            name=name,
        )
        result = run_experiment(
            config,
            out or _default_out(dataset, config.label),
            cache=_cache_arg(cache, no_cache),
            progress=progress and not as_json and sys.stderr.isatty(),
            overwrite=overwrite,
        )
    except HoprankError as e:
        raise fail(e) from e
    except Exception as e:  # a ValueError is pydantic's validation of the config: bad input
        raise fail(InvalidInput(str(e)) if isinstance(e, ValueError) else e) from e
    _print_json(result) if as_json else _print_run(result)


def _engine(
    ranker: str, params: dict[str, Any], prompt: str | None, model: str | None, base_url: list[str] | None
) -> EngineSpec:
    """The engine spec of a run, once the ranker, its parameters and the model are checked
    (exit 2 before any model loads). A ranker that needs a model and gets no ``--model``
    runs on the default pack, as ``rerank``, ``ask`` and ``decompose`` do."""
    from hoprank.rankers import ranker_spec

    name = check_ranker(ranker, {**params, **({"prompt": prompt} if prompt is not None else {})})
    if prompt is not None:
        from hoprank.prompts import load_prompt

        load_prompt(prompt)  # an unknown or malformed prompt: exit 2 before a model loads
    needs_engine = ranker_spec(name).needs_engine
    default = None
    if needs_engine and model is None and not base_url:
        from hoprank.llm.packs import DEFAULT_MODEL

        default = DEFAULT_MODEL
        typer.echo(f"note: no --model: {name} runs on the default model {DEFAULT_MODEL}", err=True)
    spec = EngineSpec.resolve(model, base_url=base_url, default_model=default)
    if needs_engine:
        check_model(spec)
    return spec


def _cache_arg(cache: Path | None, no_cache: bool) -> Path | bool:
    """``run_experiment``'s ``cache``: False (--no-cache), a folder (--cache) or True (default)."""
    if cache is not None and no_cache:
        raise InvalidInput("--cache and --no-cache exclude each other")
    return False if no_cache else (cache if cache is not None else True)


def _print_json(result: Any) -> None:
    summary = {
        "run_dir": str(result.run_dir),
        "n_queries": result.n_queries,
        "resumed": result.resumed,
        "metrics": result.metrics,
        "first_stage": result.first_stage_metrics,
    }
    m = json.loads((result.run_dir / "metrics.json").read_text(encoding="utf-8"))
    summary["relevance_level"] = m.get("relevance_level")
    summary["relevance_source"] = m.get("relevance_source")
    typer.echo(json.dumps(summary, indent=2))


def _print_run(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    m = json.loads((result.run_dir / "metrics.json").read_text(encoding="utf-8"))
    table = Table(
        title=f"{m['label']}: {m['n_queries']} queries ({m['n_judged']} judged)", title_justify="left"
    )
    table.add_column("metric")
    table.add_column("first stage", justify="right")
    table.add_column("reranked", justify="right")
    table.add_column("Δ", justify="right")
    for metric in m["metrics"]:
        a, b = m["aggregate"].get(metric), m["first_stage"].get(metric)
        d = "" if a is None or b is None else f"{a - b:+.4f}"
        table.add_row(metric, "" if b is None else f"{b:.4f}", "" if a is None else f"{a:.4f}", d)
    lat, use = m["latency"], m["usage"]
    from hoprank.evals.report import conventions_line

    table.caption = (
        f"{conventions_line(m)} · {lat['mean_s']:.2f} s/query · {use['tokens_per_query']:.0f} tokens/query · "
        f"{use['llm_calls']} LLM calls · {use['fallbacks']} fallbacks · resumed {result.resumed} · {result.run_dir}"
    )
    Console().print(table)


def _compare_cell(mc: Any, lab: str) -> str:
    """One run's cell of a metric: mean, and against the baseline Δ, mark, p, W/L/T."""
    if lab not in mc.means:  # a QA metric this system has not (no answer)
        return "–"
    cell = f"{mc.means[lab]:.4f}"
    if lab in mc.delta:
        p = mc.p_permutation.get(lab)
        mark = (
            "[green]*[/green]"
            if p is not None and p < 0.05 and mc.delta[lab] > 0
            else ("[red]*[/red]" if p is not None and p < 0.05 else "")
        )
        ptxt = "n/a" if p is None else f"{p:.3g}"
        cell += f" {mc.delta[lab]:+.4f}{mark} p={ptxt} {mc.wins[lab]}/{mc.losses[lab]}/{mc.ties[lab]}"
    return cell


def compare_cmd(
    runs: list[Path] = typer.Argument(..., help="Run folders; the first is the baseline."),
    metric: list[str] | None = typer.Option(
        None, "--metric", help="Metrics to compare (default: all shared)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Refuse runs over different query sets."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write comparison.json/.md and plots here."),
    resamples: int = typer.Option(10000, "--resamples", min=100, help="Permutation-test resamples."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Compare run folders side by side with paired significance tests."""
    setup_logging(verbose)
    from hoprank.evals.compare import compare, write_comparison

    try:
        comp = compare(runs, metrics=metric or None, strict=strict, n_resamples=resamples)
        if out is not None:
            write_comparison(comp, out)
    except HoprankError as e:
        raise fail(e) from e
    except Exception as e:
        raise fail(e) from e
    if as_json:
        typer.echo(comp.model_dump_json(indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for note in comp.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    labels = [r.label for r in comp.runs]
    table = Table(
        title=f"baseline: {comp.baseline} · {len(comp.queries)} shared queries", title_justify="left"
    )
    table.add_column("metric")
    table.add_column("n", justify="right")
    for lab in labels:
        table.add_column(lab, justify="right")
    for mc in comp.metrics:
        table.add_row(mc.metric, str(mc.n), *[_compare_cell(mc, lab) for lab in labels])
    table.add_row("s/query", "", *[f"{r.latency_mean_s:.3f}" for r in comp.runs])
    table.add_row("tokens/query", "", *[f"{r.tokens_per_query:.0f}" for r in comp.runs])
    table.caption = "Δ vs baseline, paired permutation p-value, wins/losses/ties; * p < 0.05"
    console.print(table)


def register(app: typer.Typer) -> None:
    from hoprank.cli.qa import with_qa_task

    app.command("eval")(with_qa_task(eval_cmd, cache_arg=_cache_arg))
    app.command("compare")(compare_cmd)
