"""The QA runner: a :class:`~hoprank.agents.presets.QASystem` over a QA dataset → a run folder.

The same guarantees as the ranker runner (:mod:`hoprank.evals.runner`), from the same
pieces: a :class:`~hoprank.evals.run_folder.RunFolder` (manifest with the config
fingerprint, dataset hash, model sha256 and every prompt's ``name@version#hash``; a
folder of another experiment or other inputs refused), the append-only ``results.jsonl``
(one fsync'd line per finished question; a restarted run skips the questions already
there), the :class:`~hoprank.llm.engines.cached.CachedEngine` LLM-call cache (questions answered
partly or wholly from it are flagged ``cached``), a progress bar with ETA, and bounded
concurrency. Outputs (:mod:`hoprank.evals.qa_report`): ``questions.jsonl`` (one row per
question: ids, answer, citations, metrics, cost, hops/type), ``run.trec``, ``traces.jsonl``,
``metrics.json``, ``report.md`` and plots.

:func:`run_qa_grid` runs several systems over one dataset, one run folder each, sharing
the dataset, the engine and the indexes; ``hoprank compare`` then compares the folders.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hoprank._sync import run_sync
from hoprank.agents.presets import QASystem, preset
from hoprank.agents.systems import QAOutput, QARunner, build_retriever, build_system
from hoprank.errors import ConfigError, DatasetError, InvalidInput
from hoprank.evals.build import environment
from hoprank.evals.config import fingerprint_of, stable_engine_params
from hoprank.evals.dataset import Dataset
from hoprank.evals.executor import Progress
from hoprank.evals.formats import load_dataset
from hoprank.evals.qa_report import write_qa_outputs
from hoprank.evals.results import cache_fields
from hoprank.evals.run_folder import RunFolder, model_sha256
from hoprank.llm.base import LLM
from hoprank.llm.engines.cached import CachedEngine, count_calls, default_cache_dir
from hoprank.rankers.base import Ranker
from hoprank.tools.base import Retriever

__all__ = [
    "QAExperimentConfig",
    "QAInputs",
    "QARunResult",
    "arun_qa",
    "arun_qa_grid",
    "qa_record",
    "run_qa",
    "run_qa_grid",
]

logger = logging.getLogger(__name__)

MAX_RANKED = 100
"""Ranked ids kept per question in ``results.jsonl``."""


class QAExperimentConfig(BaseModel):
    """One QA experiment: a system over a dataset (JSON-serialisable, in ``manifest.json``).

    ``model`` + ``engine_params``: the engine (``hoprank.llm.load_engine``) of a system that
    makes LLM calls; a system without any (``a``) ignores them (no engine is loaded and
    they are not part of its fingerprint). ``queries``/``limit``: which
    questions (dataset order). ``relevance_level`` overrides the dataset's declared level
    for the support qrels."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["qa"] = "qa"
    dataset: str
    dataset_format: str = "auto"
    system: QASystem = Field(default_factory=lambda: preset("c0"))
    model: str | None = None
    engine_params: dict[str, Any] = Field(default_factory=dict)
    queries: list[str] | None = None
    limit: int | None = Field(default=None, ge=1)
    relevance_level: int | None = None
    concurrency: int = Field(default=1, ge=1)
    name: str | None = None

    def identity(self) -> dict[str, Any]:
        """What determines the per-question results. The question selection (``queries``,
        ``limit``), concurrency, the display name and the relevance level may change
        between a run and its resumption: a larger ``--limit`` extends a finished run."""
        exclude = {"concurrency", "name", "relevance_level", "system", "queries", "limit"}
        data = self.model_dump(mode="json", exclude=exclude)
        data["system"] = self.system.identity()
        data["engine_params"] = stable_engine_params(self.engine_params)
        if not self.system.needs_engine:  # the model cannot change what a system without LLM calls does
            data["model"], data["engine_params"] = None, {}
        return data

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.identity())

    @property
    def label(self) -> str:
        """``name`` or the system's label (``c0 (bm25@20+decompose+...)``)."""
        return self.name or self.system.label


@dataclass
class QAInputs:
    """Ready-made pieces for a run instead of what the config would build: the loaded
    dataset, the engine (wrapped in the cache unless already a :class:`CachedEngine`),
    the retriever, the ranker (replacing ``system.ranker``)."""

    dataset: Dataset | None = None
    engine: LLM | None = None
    retriever: Retriever | None = None
    ranker: Ranker | None = None


@dataclass
class QARunResult:
    """What a finished QA run produced (everything is also on disk in ``run_dir``)."""

    run_dir: Path
    config: QAExperimentConfig
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    n_queries: int
    resumed: int
    executed: int
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Plan:
    ds: Dataset
    qids: list[str]
    runner: QARunner
    engine: LLM | None
    engine_desc: dict[str, Any] | None
    prompts: list[dict[str, Any]]


def load_qa_dataset(config: QAExperimentConfig) -> Dataset:
    ds = load_dataset(config.dataset, format=config.dataset_format)
    if config.relevance_level is not None:
        ds.set_relevance_level(config.relevance_level, "argument")
    return ds


def select_questions(config: QAExperimentConfig, ds: Dataset) -> list[str]:
    """The questions to run, in dataset order (``queries`` then ``limit``)."""
    qids = ds.query_ids(config.queries, noun="questions")
    qids = qids[: config.limit] if config.limit is not None else qids
    if not qids:
        raise DatasetError(f"dataset {ds.name!r} has no questions")
    return qids


def build_qa_engine(config: QAExperimentConfig, cache_dir: Path | None) -> LLM | None:
    """The engine of ``config.model`` (None for a system without LLM calls), cached."""
    if not config.system.needs_engine:
        return None
    if config.model is None:
        raise ConfigError(f"QA system {config.system.name!r} makes LLM calls: give a model")
    from hoprank.llm import load_engine

    engine: LLM = load_engine(config.model, **config.engine_params)
    return CachedEngine(engine, cache_dir) if cache_dir is not None else engine


def _cache_dir(cache: str | os.PathLike[str] | bool) -> Path | None:
    if cache is False:
        return None
    return default_cache_dir() if cache is True else Path(cache)


def combined_prompt(prompts: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """One ``{"ref", "hash"}`` for all the system's prompts (what resume checks compare)."""
    if not prompts:
        return None
    ref = " + ".join(f"{p['role']}={p['ref']}" for p in prompts)
    return {"ref": ref, "hash": hashlib.sha256(ref.encode()).hexdigest()[:16]}


async def _plan(config: QAExperimentConfig, inputs: QAInputs, cache_dir: Path | None) -> _Plan:
    ds = inputs.dataset if inputs.dataset is not None else await asyncio.to_thread(load_qa_dataset, config)
    if inputs.dataset is not None and config.relevance_level is not None:
        ds.set_relevance_level(config.relevance_level, "argument")
    qids = select_questions(config, ds)
    engine = inputs.engine if config.system.needs_engine else None
    if engine is None:
        engine = await asyncio.to_thread(build_qa_engine, config, cache_dir)
    elif cache_dir is not None and not isinstance(engine, CachedEngine):
        engine = CachedEngine(engine, cache_dir)
    retriever = inputs.retriever
    if retriever is None:
        retriever = await asyncio.to_thread(build_retriever, config.system, list(ds.corpus.values()))
    runner = build_system(config.system, retriever, engine, ranker=inputs.ranker)
    desc = engine.describe() if engine is not None else None
    return _Plan(ds, qids, runner, engine, desc, runner.prompts())


def qa_record(qid: str, out: QAOutput, *, seconds: float, hits: int = 0, misses: int = 0) -> dict[str, Any]:
    """The ``results.jsonl`` line of one question: the ranked ids (and scores), the answer
    and citations, what the system did, its cost (system and answering apart), how many
    LLM calls came from the cache, and the trace."""
    rec: dict[str, Any] = {
        "qid": qid,
        "ranked": [[d.id, d.score] for d in out.ranked[:MAX_RANKED]],
        "answer": out.answer,
        "citations": out.citations,
        "usage": out.usage.model_dump(mode="json"),
        "answer_usage": out.answer_usage.model_dump(mode="json"),
        "seconds": seconds,
        **cache_fields(hits, misses),
        "info": out.info,
        "trace": [s.model_dump(mode="json") for s in out.trace],
    }
    return rec


async def answer_questions(
    runner: QARunner,
    items: Sequence[tuple[str, str]],
    *,
    concurrency: int = 1,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Run every ``(qid, question)`` with at most ``concurrency`` in flight; each finished
    question's record goes to ``on_record`` at once. The first failure stops new questions,
    cancels those in flight and is raised with a note naming its question."""
    if concurrency < 1:
        raise InvalidInput("concurrency must be >= 1")
    sem = asyncio.Semaphore(concurrency)
    failed = False

    async def one(qid: str, text: str) -> None:
        nonlocal failed
        async with sem:
            if failed:
                return
            t0 = time.perf_counter()
            try:
                with count_calls() as counts:
                    out = await runner.arun(text)
            except Exception as e:
                failed = True
                e.add_note(f"(while answering question {qid!r})")
                logger.error("question %s failed: %s: %s", qid, type(e).__name__, e)
                raise
        rec = qa_record(qid, out, seconds=time.perf_counter() - t0, hits=counts.hits, misses=counts.misses)
        if on_record is not None:
            on_record(rec)

    tasks = [asyncio.create_task(one(q, t)) for q, t in items]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _manifest(
    config: QAExperimentConfig, plan: _Plan, folder: RunFolder, attempt: dict[str, Any]
) -> dict[str, Any]:
    ds = plan.ds
    return {
        "format": 1,
        "task": "qa",
        "status": "running",
        "label": config.label,
        "fingerprint": config.fingerprint,
        "config": config.model_dump(mode="json"),
        "system": {
            "name": config.system.name,
            "label": config.system.label,
            "summary": config.system.summary(),
            "description": config.system.description,
        },
        "dataset": {"name": ds.name, "source": ds.source, "hash": ds.content_hash, **ds.summary()},
        "queries": {"n": len(plan.qids), "ids": plan.qids},
        "engine": plan.engine_desc,
        "model_sha256": model_sha256(plan.engine_desc),
        "prompt": combined_prompt(plan.prompts),
        "prompts": plan.prompts,
        "environment": environment(),
        "attempts": folder.attempts(attempt),
        "started_at": folder.started_at(attempt["started_at"]),
    }


def _cache_stats(engine: LLM | None) -> dict[str, Any] | None:
    return engine.stats() if isinstance(engine, CachedEngine) else None


async def _execute(
    config: QAExperimentConfig,
    plan: _Plan,
    folder: RunFolder,
    pending: list[tuple[str, str]],
    done: dict[str, dict[str, Any]],
    *,
    progress: bool | None,
) -> None:
    """Answer the pending questions, appending each record to ``results.jsonl`` at once."""
    log = folder.results()
    with Progress(len(plan.qids), done=len(done), enabled=progress, description=config.label) as bar:

        def sink(rec: dict[str, Any]) -> None:
            log.append(rec)
            done[rec["qid"]] = rec
            bar.advance()

        await answer_questions(plan.runner, pending, concurrency=config.concurrency, on_record=sink)


async def _finish(
    plan: _Plan,
    folder: RunFolder,
    manifest: dict[str, Any],
    done: dict[str, dict[str, Any]],
    *,
    cache_before: dict[str, Any] | None,
    plots: bool,
) -> dict[str, Any]:
    """Write the outputs and the completed manifest; the metrics."""
    after = _cache_stats(plan.engine)
    if cache_before is not None and after is not None:
        hits, misses = after["hits"] - cache_before["hits"], after["misses"] - cache_before["misses"]
        manifest["cache"] = {**after, "hits": hits, "misses": misses}
    manifest.update(status="complete", finished_at=manifest["attempts"][-1]["finished_at"])
    m: dict[str, Any] = await asyncio.to_thread(
        write_qa_outputs, folder.path, plan.ds, plan.qids, done, manifest, plots=plots
    )
    manifest["outputs"] = folder.outputs()
    folder.write_manifest(manifest)
    return m


async def arun_qa(
    config: QAExperimentConfig,
    out_dir: str | os.PathLike[str],
    *,
    inputs: QAInputs | None = None,
    cache: str | os.PathLike[str] | bool = True,
    progress: bool | None = None,
    overwrite: bool = False,
    plots: bool = True,
) -> QARunResult:
    """Run (or resume) a QA experiment into ``out_dir``.

    ``inputs``: ready-made dataset, engine, retriever or ranker (SDK use, grids, tests).
    ``cache``: True for the default LLM-call cache, a folder, or False. ``progress``: a
    progress bar with ETA (None: only on a terminal). ``overwrite``: start over."""
    folder = RunFolder(out_dir, config.fingerprint, overwrite=overwrite)
    plan = await _plan(config, inputs or QAInputs(), _cache_dir(cache))
    folder.check_inputs(combined_prompt(plan.prompts), plan.ds.content_hash, model_sha256(plan.engine_desc))
    folder.prepare()
    wanted = set(plan.qids)
    done = {q: r for q, r in folder.results().load().items() if q in wanted}
    pending = [(q, plan.ds.queries[q].text) for q in plan.qids if q not in done]
    attempt: dict[str, Any] = {
        "started_at": time.time(),
        "concurrency": config.concurrency,
        "resumed": len(done),
        "pending": len(pending),
    }
    manifest = _manifest(config, plan, folder, attempt)
    folder.write_manifest(manifest)
    if done:
        logger.info("%s: resuming, %d of %d questions already done", folder.path, len(done), len(plan.qids))
    before = _cache_stats(plan.engine)
    with folder.attempt(manifest, attempt):
        await _execute(config, plan, folder, pending, done, progress=progress)
    attempt.update(executed=len(pending))
    m = await _finish(plan, folder, manifest, done, cache_before=before, plots=plots)
    return QARunResult(
        run_dir=folder.path,
        config=config,
        metrics=m["aggregate"],
        per_query=m["per_query"],
        n_queries=len(plan.qids),
        resumed=int(attempt["resumed"]),
        executed=len(pending),
        manifest=manifest,
    )


def run_qa(config: QAExperimentConfig, out_dir: str | os.PathLike[str], **kwargs: Any) -> QARunResult:
    """Sync facade of :func:`arun_qa`."""
    return run_sync(arun_qa(config, out_dir, **kwargs))


def _retriever_key(system: QASystem) -> str:
    return json.dumps([system.retriever, system.index, system.retriever_params], sort_keys=True, default=str)


async def arun_qa_grid(
    config: QAExperimentConfig,
    systems: Sequence[QASystem],
    out_dir: str | os.PathLike[str],
    *,
    inputs: QAInputs | None = None,
    cache: str | os.PathLike[str] | bool = True,
    on_result: Callable[[QARunResult], None] | None = None,
    **kwargs: Any,
) -> list[QARunResult]:
    """Run ``config`` once per system into ``out_dir/<system name>``, one after the other,
    sharing the dataset, the engine (and its cache: a later system replays the LLM calls
    an earlier one made, e.g. c's decomposition after c0's, and is flagged ``cached``) and
    one index per retriever setting. ``kwargs``: as :func:`arun_qa`. ``on_result`` is
    called as each system finishes."""
    if not systems:
        raise ConfigError("no QA systems to run")
    given = inputs or QAInputs()
    configs = [QAExperimentConfig(**{**config.model_dump(), "system": s, "name": None}) for s in systems]
    ds = given.dataset if given.dataset is not None else await asyncio.to_thread(load_qa_dataset, config)
    engine = given.engine
    needing = [c for c in configs if c.system.needs_engine]
    if engine is None and needing:
        engine = await asyncio.to_thread(build_qa_engine, needing[0], _cache_dir(cache))
    elif (
        engine is not None
        and (cdir := _cache_dir(cache)) is not None
        and not isinstance(engine, CachedEngine)
    ):
        engine = CachedEngine(engine, cdir)
    retrievers: dict[str, Retriever] = {}
    results = []
    for cfg in configs:
        key = _retriever_key(cfg.system)
        if given.retriever is not None:
            retrievers.setdefault(key, given.retriever)
        elif key not in retrievers:
            retrievers[key] = await asyncio.to_thread(build_retriever, cfg.system, list(ds.corpus.values()))
        pieces = QAInputs(dataset=ds, engine=engine, retriever=retrievers[key], ranker=given.ranker)
        res = await arun_qa(cfg, Path(out_dir) / cfg.system.name, inputs=pieces, cache=cache, **kwargs)
        results.append(res)
        if on_result is not None:
            on_result(res)
    return results


def run_qa_grid(
    config: QAExperimentConfig, systems: Sequence[QASystem], out_dir: str | os.PathLike[str], **kwargs: Any
) -> list[QARunResult]:
    """Sync facade of :func:`arun_qa_grid`."""
    return run_sync(arun_qa_grid(config, systems, out_dir, **kwargs))
