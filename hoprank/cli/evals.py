"""``hoprank eval`` (run an experiment into a run folder) and ``hoprank compare`` (runs
side by side with paired significance tests).

Exit codes: the table in :mod:`hoprank.cli._common`: 0 ok; 2 usage or input errors (bad
options, dataset/config/prompt errors, a missing optional extra); 1 runtime failures
(engine errors, anything else).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hoprank.cli._common import (
    VERBOSE_OPTION,
    check_model,
    check_ranker,
    fail,
    parse_params,
    ranker_help,
    run_progress,
    setup_logging,
)
from hoprank.cli._options import OptionGroup, with_option_groups
from hoprank.errors import HoprankError, InvalidInput
from hoprank.llm.spec import EngineSpec

if TYPE_CHECKING:
    from hoprank.evals.config import ExperimentConfig

__all__ = ["register"]

logger = logging.getLogger(__name__)


class Executor(str, Enum):
    """Where ``hoprank eval`` runs the queries."""

    local = "local"
    ray = "ray"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentOptions(OptionGroup):
    """What ``hoprank eval`` runs: the options that make its :class:`ExperimentConfig`
    (an option group, see :mod:`hoprank.cli._options`)."""

    dataset: Annotated[
        str,
        typer.Option(
            "--dataset", "-d", help="Dataset folder/file or sample name (sample-dl19, sample-hotpotqa)."
        ),
    ]
    ranker: Annotated[str, typer.Option("--ranker", "-r", help=ranker_help("One of: "))] = "identity"
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Engine spec: pack name, folder, .gguf, openai:<model> "
            "(default for a ranker that needs a model: the default pack, qwen2.5-coder-1.5b).",
        ),
    ] = None
    first_stage: Annotated[
        str | None,
        typer.Option("--first-stage", help="Run name in the dataset, TREC run file, or retriever:bm25."),
    ] = None
    depth: Annotated[int, typer.Option("--depth", min=1, help="Candidates per query to rerank.")] = 100
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Only the first N judged queries (those with qrels)."),
    ] = None
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="Prompt name, name@version or YAML path.")
    ] = None
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Ranker parameter key=value (repeatable).")
    ] = None
    engine_param: Annotated[
        list[str] | None, typer.Option("--engine-param", help="Engine parameter key=value (repeatable).")
    ] = None
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Queries in flight.")] = 1
    base_url: Annotated[
        list[str] | None, typer.Option("--base-url", help="OpenAI-compatible endpoint(s) (repeatable).")
    ] = None
    executor: Annotated[Executor, typer.Option("--executor", help="Where queries run.")] = Executor.local
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="Metrics to report (repeatable), e.g. ndcg@10.")
    ] = None
    name: Annotated[str | None, typer.Option("--name", help="Display name of this run.")] = None

    def config(self) -> ExperimentConfig:
        """The experiment, once the ranker, its parameters, the prompt and the model are
        checked (exit 2 before any model loads)."""
        from hoprank.evals.config import ExperimentConfig

        ranker_params = parse_params(self.param)
        spec = self._engine(ranker_params)
        engine_params = {
            **parse_params(self.engine_param, "--engine-param"),
            **spec.engine_kwargs(secrets=False),
        }
        return ExperimentConfig(
            dataset=self.dataset,
            first_stage=self.first_stage,
            depth=self.depth,
            ranker=self.ranker,
            ranker_params=ranker_params,
            model=spec.model,
            engine_params=engine_params,
            prompt=self.prompt,
            limit=self.limit,
            metrics=self.metric or None,
            concurrency=self.concurrency,
            executor=self.executor.value,
            name=self.name,
        )

    def _engine(self, params: dict[str, Any]) -> EngineSpec:
        """The engine spec of the run. A ranker that needs a model and gets no ``--model``
        runs on the default pack, as ``rerank``, ``ask`` and ``decompose`` do."""
        from hoprank.rankers import ranker_spec

        prompt = self.prompt
        name = check_ranker(self.ranker, {**params, **({"prompt": prompt} if prompt is not None else {})})
        if prompt is not None:
            from hoprank.prompts import load_prompt

            load_prompt(prompt)  # an unknown or malformed prompt: exit 2 before a model loads
        needs_engine = ranker_spec(name).needs_engine
        default = None
        if needs_engine and self.model is None and not self.base_url:
            from hoprank.llm.models.packs import DEFAULT_MODEL

            default = DEFAULT_MODEL
            typer.echo(f"note: no --model: {name} runs on the default model {DEFAULT_MODEL}", err=True)
        spec = EngineSpec.resolve(self.model, base_url=self.base_url, default_model=default)
        if needs_engine:
            check_model(spec)
        return spec


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunFolderOptions(OptionGroup):
    """Where ``hoprank eval`` writes and what it reuses: the run folder, the LLM-call
    cache, starting over (an option group, see :mod:`hoprank.cli._options`)."""

    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run folder (resumes when it holds the same experiment)."),
    ] = None
    cache: Annotated[
        Path | None, typer.Option("--cache", help="LLM-call cache folder (default $HOPRANK_CACHE/llm-calls).")
    ] = None
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not cache LLM calls.")] = False
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Start over: remove the run folder's earlier outputs instead of resuming."
        ),
    ] = False

    def folder(self, dataset: str, label: str) -> Path:
        """``--out``, or ``runs/<dataset>__<label>__<time>``."""
        if self.out is not None:
            return self.out
        import time

        ds = Path(dataset).name or dataset
        safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in label)
        return Path("runs") / f"{ds}__{safe}__{time.strftime('%Y%m%d-%H%M%S')}"

    def cache_arg(self) -> Path | bool:
        """``run_experiment``'s ``cache``: False (--no-cache), a folder (--cache) or True (default)."""
        if self.cache is not None and self.no_cache:
            raise InvalidInput("--cache and --no-cache exclude each other")
        return False if self.no_cache else (self.cache if self.cache is not None else True)


@with_option_groups
def eval_cmd(
    *,
    experiment: ExperimentOptions,
    run: RunFolderOptions,
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print the metrics as JSON (stdout); progress as JSON lines on stderr "
        '({"event": "started"|"query", ...}).',
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar (on a terminal)."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Rerank a dataset's first stage with a ranker and score it; writes a run folder."""
    setup_logging(verbose)
    from hoprank.evals.runner import run_experiment

    try:
        config = experiment.config()
        result = run_experiment(
            config,
            run.folder(experiment.dataset, config.label),
            cache=run.cache_arg(),
            progress=run_progress(progress, as_json),
            overwrite=run.overwrite,
            on_event=_print_event if as_json else None,
        )
    except HoprankError as e:
        raise fail(e) from e
    except Exception as e:  # a ValueError is pydantic's validation of the config: bad input
        raise fail(InvalidInput(str(e)) if isinstance(e, ValueError) else e) from e
    _print_json(result) if as_json else _print_run(result)


def _print_event(event: dict[str, Any]) -> None:
    """One JSON line on stderr per event of a ``--json`` run (started, each finished query):
    stdout keeps only the final summary."""
    sys.stderr.write(json.dumps(event) + "\n")
    sys.stderr.flush()


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
    summary["cached_queries"] = m["usage"].get("cached_queries", 0)
    summary["skipped_unjudged"] = m.get("skipped_unjudged", 0)
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
    from hoprank.evals.report import cache_note, conventions_line

    n_cached = use.get("cached_queries", 0)
    measured = lat.get("measured_mean_s")
    if not n_cached:
        secs = f"{lat['mean_s']:.2f} s/query"
    elif measured is None:
        secs = f"s/query not measured ({n_cached} cached queries)"
    else:
        secs = f"{measured:.2f} s/query (measured on {lat['measured_queries']} uncached queries)"
    table.caption = (
        f"{conventions_line(m)} · {secs} · {use['tokens_per_query']:.0f} tokens/query · "
        f"{use['llm_calls']} LLM calls · {use['fallbacks']} fallbacks · resumed {result.resumed} · {result.run_dir}"
    )
    console = Console()
    console.print(table)
    if n_cached:
        console.print(f"[yellow]note:[/yellow] {cache_note(m)}")


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
        cells = [mc.cell(lab, mark=_colored_star) for lab in labels]
        table.add_row(mc.metric, str(mc.n), *cells)
    table.add_row("s/query", "", *[r.s_per_query_cell() for r in comp.runs])
    table.add_row("tokens/query", "", *[f"{r.tokens_per_query:.0f}" for r in comp.runs])
    table.caption = "Δ vs baseline, paired permutation p-value, wins/losses/ties; * p < 0.05"
    if any(r.cached_queries for r in comp.runs):
        from hoprank.evals.compare import CACHED_LEGEND, CACHED_MARK

        table.caption += f"; {CACHED_MARK} {CACHED_LEGEND}"
    console.print(table)


def _colored_star(delta: float) -> str:
    return "[green]*[/green]" if delta > 0 else "[red]*[/red]"


def _cache_arg(cache: Path | None, no_cache: bool) -> Path | bool:
    """``--cache``/``--no-cache`` as the runners' ``cache`` (for ``--task qa``)."""
    return RunFolderOptions(cache=cache, no_cache=no_cache).cache_arg()


def register(app: typer.Typer) -> None:
    from hoprank.cli.qa import with_qa_task

    app.command("eval")(with_qa_task(eval_cmd, cache_arg=_cache_arg))
    app.command("compare")(compare_cmd)
