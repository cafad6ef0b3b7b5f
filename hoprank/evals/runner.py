"""The experiment runner: config → run folder, resumable after a crash.

Run folder::

    manifest.json     config, fingerprint, dataset hash, engine describe() (model sha256),
                      prompt name@version#hash, environment versions, attempts + timings
    results.jsonl     append-only, one fsync'd line per finished query (the source of truth)
    run.trec          the reranked lists (TREC, 6 columns)
    traces.jsonl      per-query ranker traces
    metrics.json      aggregate + per-query metrics, first stage vs reranked, cost
    report.md         tables; metrics.png and quality_latency.png

Restarting a run on the same folder skips the queries already in ``results.jsonl`` (a
torn last line is discarded). A folder that holds a different experiment (another
config fingerprint) is refused; ``overwrite=True`` starts over (outputs removed, nothing
resumed). The folder is created only once the dataset, first stage, engine and ranker
are built, so a run that fails on its inputs leaves nothing behind.

:func:`arun_experiment` runs three parts: the run folder (:class:`~hoprank.evals.run_folder.RunFolder`:
manifest, resume checks, atomic writes), the plan (dataset, candidates, ranker, engine)
and the execution (local or Ray).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hoprank._sync import run_sync
from hoprank.evals.build import (
    Item,
    build_engine,
    build_items,
    build_ranker,
    environment,
    load_config_dataset,
    prompt_info,
)
from hoprank.evals.config import ExperimentConfig
from hoprank.evals.dataset import Dataset
from hoprank.evals.executor import Progress, RecordSink, rank_items
from hoprank.evals.report import write_outputs
from hoprank.evals.run_folder import RunFolder, model_sha256
from hoprank.llm.base import LLM
from hoprank.llm.engines.cached import CachedEngine, default_cache_dir
from hoprank.llm.spec import EngineSpec
from hoprank.rankers.base import BaseRanker, Ranker
from hoprank.runs import Run

__all__ = ["RunOptions", "RunResult", "arun_experiment", "run_experiment"]

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run produced (everything is also on disk in ``run_dir``)."""

    run_dir: Path
    config: ExperimentConfig
    metrics: dict[str, float]
    first_stage_metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    n_queries: int
    resumed: int
    executed: int
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How :func:`arun_experiment` runs an experiment, beside what it runs (the config).

    ``ranker``/``engine``/``retriever`` objects override what the config would build
    (for SDK use and tests). ``cache``: True for the default LLM-call cache
    (``$HOPRANK_CACHE/llm-calls``), a folder, or False for none. ``progress``: a rich
    progress bar (None: only on a TTY). ``overwrite``: start over (the folder's earlier
    outputs are removed, nothing is resumed) instead of resuming or refusing a folder
    that holds another experiment. ``plots``: write the report's plots.
    ``ray_num_cpus``: CPUs for a local Ray cluster (``executor="ray"``). ``on_event``:
    called with ``{"event": "started", "run_dir", "label", "total", "done"}`` once the
    run folder is ready and ``{"event": "query", "qid", "done", "total", "cached"}`` as
    each query finishes (``hoprank eval --json`` prints them on stderr).
    """

    ranker: Ranker | None = None
    engine: LLM | None = None
    retriever: Any | None = None
    cache: str | os.PathLike[str] | bool = True
    progress: bool | None = None
    overwrite: bool = False
    plots: bool = True
    ray_num_cpus: int | None = None
    on_event: Callable[[dict[str, Any]], None] | None = None

    @property
    def cache_dir(self) -> Path | None:
        """The LLM-call cache folder (None: no cache)."""
        if self.cache is False:
            return None
        return default_cache_dir() if self.cache is True else Path(self.cache)


@dataclass
class _Plan:
    """What a run works on: the dataset, its queries with their first-stage candidates,
    the ranker and the engine (None on Ray: the workers build their own) and how the
    engine describes itself."""

    ds: Dataset
    items: list[Item]
    first_stage: Run
    cache_dir: Path | None
    ranker: Ranker | None
    engine: Any
    engine_desc: dict[str, Any] | None
    prompt: dict[str, Any] | None
    skipped_unjudged: int = 0

    @property
    def qids(self) -> list[str]:
        return [q for q, _, _ in self.items]


async def _plan(config: ExperimentConfig, options: RunOptions) -> _Plan:
    ds = load_config_dataset(config)
    items, first_stage, skipped = await asyncio.to_thread(
        build_items, config, ds, retriever=options.retriever
    )
    cache_dir = options.cache_dir
    ranker, engine = options.ranker, options.engine
    if ranker is None and config.executor == "local":
        if engine is None:
            engine = build_engine(config, cache_dir)
        elif cache_dir is not None and not isinstance(engine, CachedEngine):
            engine = CachedEngine(engine, cache_dir)
        ranker = build_ranker(config, engine)
    eng = engine if engine is not None else (ranker.engine if isinstance(ranker, BaseRanker) else None)
    engine_desc: dict[str, Any] | None = None
    if eng is None and ranker is None and config.model is not None:
        # Ray workers build their own engines: name it by its spec, without loading a model here
        spec = EngineSpec(config.model, options=config.engine_params)
        engine_desc = await asyncio.to_thread(spec.identity)
    elif eng is not None and hasattr(eng, "describe"):
        engine_desc = eng.describe()
    prompt = prompt_info(config, ranker)
    return _Plan(ds, items, first_stage, cache_dir, ranker, eng, engine_desc, prompt, skipped)


def _manifest(
    config: ExperimentConfig, plan: _Plan, folder: RunFolder, attempt: dict[str, Any]
) -> dict[str, Any]:
    ds, qids = plan.ds, plan.qids
    return {
        "format": 1,
        "status": "running",
        "label": config.label,
        "fingerprint": config.fingerprint,
        "config": config.model_dump(mode="json"),
        "dataset": {"name": ds.name, "source": ds.source, "hash": ds.content_hash, **ds.summary()},
        "first_stage": {
            "name": config.first_stage or next(iter(ds.runs), "(default)"),
            "depth": config.depth,
        },
        "queries": {"n": len(qids), "ids": qids, "skipped_unjudged": plan.skipped_unjudged},
        "ranker": {
            "name": plan.ranker.name if plan.ranker is not None else config.ranker,
            "class": type(plan.ranker).__qualname__ if plan.ranker is not None else None,
            "params": config.ranker_params,
        },
        "engine": plan.engine_desc,
        "model_sha256": model_sha256(plan.engine_desc),
        "prompt": plan.prompt,
        "environment": environment(),
        "attempts": folder.attempts(attempt),
        "started_at": folder.started_at(attempt["started_at"]),
    }


async def _execute(
    config: ExperimentConfig,
    plan: _Plan,
    pending: list[Item],
    sink: RecordSink,
    ray_num_cpus: int | None,
) -> None:
    if config.executor == "ray":
        from hoprank.evals.ray_executor import execute_ray

        await asyncio.to_thread(
            execute_ray,
            config,
            pending,
            sink,
            ranker=plan.ranker,
            cache_dir=plan.cache_dir,
            num_cpus=ray_num_cpus,
        )
        return
    assert plan.ranker is not None
    await rank_items(plan.ranker, pending, concurrency=config.concurrency, top_k=config.top_k, on_record=sink)


def _new_attempt(config: ExperimentConfig, *, resumed: int, pending: int) -> dict[str, Any]:
    """The manifest's record of this attempt (finished and timed when it ends)."""
    return {
        "started_at": time.time(),
        "executor": config.executor,
        "concurrency": config.concurrency,
        "resumed": resumed,
        "pending": pending,
    }


async def _finish(
    config: ExperimentConfig,
    plan: _Plan,
    folder: RunFolder,
    manifest: dict[str, Any],
    attempt: dict[str, Any],
    done: dict[str, dict[str, Any]],
    plots: bool,
) -> RunResult:
    """Write the outputs and the completed manifest; the run's result."""
    qids = plan.qids
    if isinstance(plan.engine, CachedEngine):
        manifest["cache"] = plan.engine.stats()
    manifest.update(status="complete", finished_at=attempt["finished_at"])
    m = await asyncio.to_thread(
        write_outputs, folder.path, plan.ds, qids, plan.first_stage, done, manifest,
        metrics=config.metrics, plots=plots,
    )  # fmt: skip
    manifest["outputs"] = folder.outputs()
    folder.write_manifest(manifest)
    return RunResult(
        run_dir=folder.path,
        config=config,
        metrics=m["aggregate"],
        first_stage_metrics=m["first_stage"],
        per_query=m["per_query"],
        n_queries=len(qids),
        resumed=attempt["resumed"],
        executed=attempt["executed"],
        manifest=manifest,
    )


async def arun_experiment(
    config: ExperimentConfig,
    out_dir: str | os.PathLike[str],
    options: RunOptions | None = None,
    **keywords: Any,
) -> RunResult:
    """Run (or resume) an experiment into ``out_dir``.

    ``options`` (a :class:`RunOptions`) or its fields as keywords (``ranker=``,
    ``engine=``, ``retriever=``, ``cache=``, ``progress=``, ``overwrite=``, ``plots=``,
    ``ray_num_cpus=``; keywords override the fields of ``options``) say how.
    """
    opts = RunOptions(**keywords) if options is None else dataclasses.replace(options, **keywords)
    folder = RunFolder(out_dir, config.fingerprint, overwrite=opts.overwrite)
    plan = await _plan(config, opts)
    qids = plan.qids
    folder.check_inputs(plan.prompt, plan.ds.content_hash, model_sha256(plan.engine_desc))
    folder.prepare()
    log = folder.results()
    done = log.load()
    pending = [it for it in plan.items if it[0] not in done]
    attempt = _new_attempt(config, resumed=len([q for q in qids if q in done]), pending=len(pending))
    manifest = _manifest(config, plan, folder, attempt)
    folder.write_manifest(manifest)
    if done:
        logger.info(
            "%s: resuming, %d of %d queries already done", folder.path, len(qids) - len(pending), len(qids)
        )

    emit = opts.on_event or (lambda event: None)
    emit(
        {
            "event": "started",
            "run_dir": str(folder.path),
            "label": config.label,
            "total": len(qids),
            "done": len(qids) - len(pending),
        }
    )
    with Progress(
        len(qids), done=len(qids) - len(pending), enabled=opts.progress, description=config.label
    ) as bar:

        def sink(rec: dict[str, Any]) -> None:
            log.append(rec)
            done[rec["qid"]] = rec
            bar.advance()
            emit(
                {
                    "event": "query",
                    "qid": rec["qid"],
                    "done": bar.done,
                    "total": len(qids),
                    "cached": bool(rec.get("cached")),
                }
            )

        with folder.attempt(manifest, attempt):
            await _execute(config, plan, pending, sink, opts.ray_num_cpus)

    attempt.update(executed=len(pending))
    return await _finish(config, plan, folder, manifest, attempt, done, opts.plots)


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | os.PathLike[str],
    options: RunOptions | None = None,
    **keywords: Any,
) -> RunResult:
    """Sync facade of :func:`arun_experiment`."""
    return run_sync(arun_experiment(config, out_dir, options, **keywords))
