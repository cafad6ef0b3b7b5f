"""``hoprank eval --task qa``: evaluate QA systems (presets ``a``, ``b``, ``c0``, ``c``, ``d``,
system files, ``-p`` overrides) on a QA dataset; one run folder per system.

The options join ``hoprank eval`` through :func:`with_qa_task`, which wraps the ranker
eval's command: ``--task`` (``rank``, the default, runs that command unchanged) and
``--system``; the other options are the ranker eval's own (``--dataset``, ``--model``,
``-p``, ``--limit``, ``--out``, ``--concurrency``, ``--cache``/``--no-cache``,
``--overwrite``, ``--name``, ``--json``...).

One system: ``--out`` is its run folder. Several (``--system a,b,c0,c,d``): ``--out`` holds
one run folder per system, named after it, so ``hoprank compare OUT/*`` compares them.
``--json`` prints one JSON line per system as it finishes.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from hoprank.cli._common import check_model, check_ranker, fail, parse_params, run_progress, setup_logging
from hoprank.errors import HoprankError, InvalidInput
from hoprank.llm.spec import EngineSpec

__all__ = ["QAOptions", "Task", "qa_eval", "with_qa_task"]


class Task(str, Enum):
    """What ``hoprank eval`` evaluates: a ranker over a first stage, or QA systems."""

    rank = "rank"
    qa = "qa"


_TASK: Any = typer.Option(
    "rank", "--task", help="rank: rerank a first stage; qa: QA systems (--system) on a QA dataset."
)
_SYSTEM: Any = typer.Option(
    None,
    "--system",
    help="--task qa: a preset (a, b, c0, c, d), a list (a,b,c0,c,d: one run folder each under "
    "--out) or a .yaml system file; -p key=value overrides its parameters.",
)
_RANK_ONLY = {
    "ranker": ("--ranker", "identity"),
    "first_stage": ("--first-stage", None),
    "depth": ("--depth", 100),
    "prompt": ("--prompt", None),
    "metric": ("--metric", None),
}
"""The ranker eval's options that ``--task qa`` refuses, with their defaults."""


@dataclass
class QAOptions:
    """The ``hoprank eval`` options that ``--task qa`` reads."""

    dataset: str
    system: str | None
    model: str | None
    limit: int | None
    out: Path | None
    params: list[str] | None
    engine_params: list[str] | None
    concurrency: int
    base_url: list[str] | None
    cache: Path | bool
    name: str | None
    overwrite: bool
    as_json: bool
    progress: bool
    rank_only: dict[str, bool]
    """Which ranker-eval options were given (``--ranker``, ``--depth``...): refused here."""


def _default_out(dataset: str, label: str) -> Path:
    ds = Path(dataset).name or dataset
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in label)
    return Path("runs") / f"{ds}__qa-{safe}__{time.strftime('%Y%m%d-%H%M%S')}"


def _engine_spec(systems: list[Any], model: str | None, base_url: list[str] | None) -> EngineSpec | None:
    """The engine the systems need (None: no LLM calls), checked before anything loads;
    rankers and their parameters are checked too (exit 2)."""
    for s in systems:
        if s.ranker is not None:
            check_ranker(s.ranker, dict(s.ranker_params))
    if not any(s.needs_engine for s in systems):
        return None
    default = None
    if model is None and not base_url:
        from hoprank.llm.models.packs import DEFAULT_MODEL

        default = DEFAULT_MODEL
        typer.echo(f"note: no --model: the QA systems run on the default model {DEFAULT_MODEL}", err=True)
    spec = EngineSpec.resolve(model, base_url=base_url, default_model=default)
    check_model(spec)
    return spec


def _summary(res: Any) -> dict[str, Any]:
    m = json.loads((res.run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {
        "run_dir": str(res.run_dir),
        "system": res.config.system.name,
        "label": res.config.label,
        "n_queries": res.n_queries,
        "resumed": res.resumed,
        "metrics": res.metrics,
        "latency_mean_s": m["latency"]["mean_s"],
        "tokens_per_query": m["usage"]["tokens_per_query"],
        "cached_questions": m["usage"]["cached_questions"],
        "relevance_level": m.get("relevance_level"),
        "relevance_source": m.get("relevance_source"),
    }


def _print_table(results: list[Any], out: Path, grid: bool) -> None:
    from hoprank.evals.qa_report import qa_table
    from hoprank.evals.report import conventions_line

    runs = [json.loads((r.run_dir / "metrics.json").read_text(encoding="utf-8")) for r in results]
    typer.echo(qa_table(runs))
    typer.echo("")
    typer.echo(f"{conventions_line(runs[0])}; run folders: " + ", ".join(str(r.run_dir) for r in results))
    if grid:
        typer.echo(f"compare them: hoprank compare {out}/*")


def qa_eval(opts: QAOptions) -> None:
    """Run the systems of ``opts`` (see the module docstring); errors propagate to the caller."""
    from hoprank.agents.presets import resolve_systems
    from hoprank.evals.qa_runner import QAExperimentConfig, run_qa, run_qa_grid

    given = [name for name, on in opts.rank_only.items() if on]
    if given:
        raise InvalidInput(
            f"{', '.join(given)}: ranker-eval options, not for --task qa "
            "(the reranker is a system parameter: -p ranker=NAME -p ranker_params.window=10)"
        )
    if not opts.system:
        raise InvalidInput(
            "--task qa needs --system: a preset (a, b, c0, c, d), a list a,b,c0 or a .yaml file"
        )
    systems = resolve_systems(opts.system, parse_params(opts.params))
    spec = _engine_spec(systems, opts.model, opts.base_url)
    engine_params = parse_params(opts.engine_params, "--engine-param")
    if spec is not None:
        engine_params = {**engine_params, **spec.engine_kwargs(secrets=False)}
    grid = len(systems) > 1
    config = QAExperimentConfig(
        dataset=opts.dataset,
        system=systems[0],
        model=spec.model if spec is not None else None,
        engine_params=engine_params,
        limit=opts.limit,
        concurrency=opts.concurrency,
        name=None if grid else opts.name,
    )
    out = opts.out or _default_out(opts.dataset, opts.name or ("grid" if grid else systems[0].name))
    kwargs: dict[str, Any] = {
        "cache": opts.cache,
        "progress": run_progress(opts.progress, opts.as_json),
        "overwrite": opts.overwrite,
    }

    def emit(res: Any) -> None:
        if opts.as_json:
            typer.echo(json.dumps(_summary(res)))

    if grid:
        results = run_qa_grid(config, systems, out, on_result=emit, **kwargs)
    else:
        results = [run_qa(config, out, **kwargs)]
        emit(results[0])
    if not opts.as_json:
        _print_table(results, out, grid)


def _options(
    system: str | None, kw: dict[str, Any], cache_arg: Callable[[Any, bool], Path | bool]
) -> QAOptions:
    """:class:`QAOptions` from the ranker eval command's keyword arguments."""
    rank_only = {
        flag: kw.get(key, default) not in (default, []) for key, (flag, default) in _RANK_ONLY.items()
    }
    executor = kw.get("executor")
    rank_only["--executor"] = (executor.value if isinstance(executor, Enum) else executor) not in (
        None,
        "local",
    )
    return QAOptions(
        dataset=kw["dataset"],
        system=system,
        model=kw.get("model"),
        limit=kw.get("limit"),
        out=kw.get("out"),
        params=kw.get("param"),
        engine_params=kw.get("engine_param"),
        concurrency=kw.get("concurrency", 1),
        base_url=kw.get("base_url"),
        cache=cache_arg(kw.get("cache"), bool(kw.get("no_cache"))),
        name=kw.get("name"),
        overwrite=bool(kw.get("overwrite")),
        as_json=bool(kw.get("as_json")),
        progress=bool(kw.get("progress", True)),
        rank_only=rank_only,
    )


def with_qa_task(
    rank_cmd: Callable[..., None], *, cache_arg: Callable[[Any, bool], Path | bool]
) -> Callable[..., None]:
    """``rank_cmd`` (the ranker eval command) with ``--task`` and ``--system`` added: with
    the default ``--task rank`` and no ``--system`` it runs ``rank_cmd`` exactly as before;
    otherwise :func:`qa_eval` on the same options (exit codes of the table: 2 for bad
    input, an unknown system or a ranker-eval option such as ``--ranker``). ``cache_arg``
    turns ``--cache``/``--no-cache`` into the runners' ``cache``."""
    sig = inspect.signature(rank_cmd, eval_str=True)

    @functools.wraps(rank_cmd)
    def cmd(*args: Any, task: Task = Task.rank, system: str | None = None, **kwargs: Any) -> None:
        if task is Task.rank and system is None:
            rank_cmd(*args, **kwargs)
            return
        verbose = bool(kwargs.get("verbose"))
        setup_logging(verbose)  # bm25s: warnings only without --verbose
        try:
            if task is not Task.qa:
                raise InvalidInput("--system needs --task qa")
            qa_eval(_options(system, kwargs, cache_arg))
        except HoprankError as e:
            raise fail(e) from e
        except Exception as e:  # a ValueError is pydantic's validation of a system: bad input
            raise fail(InvalidInput(str(e)) if isinstance(e, ValueError) else e) from e

    extra = [
        inspect.Parameter("task", inspect.Parameter.KEYWORD_ONLY, default=_TASK, annotation=Task),
        inspect.Parameter("system", inspect.Parameter.KEYWORD_ONLY, default=_SYSTEM, annotation=str | None),
    ]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values()]
    cmd.__signature__ = sig.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
    cmd.__annotations__ = {**rank_cmd.__annotations__, "task": Task, "system": str | None}
    cmd.__doc__ = (
        rank_cmd.__doc__ or ""
    ).rstrip() + " With --task qa: QA systems (--system) on a QA dataset."
    return cmd
