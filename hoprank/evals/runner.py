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
config fingerprint) is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hoprank._fsio import write_json_atomic
from hoprank._sync import run_sync
from hoprank.errors import ConfigError
from hoprank.evals.build import (
    build_engine,
    build_items,
    build_ranker,
    environment,
    load_config_dataset,
    prompt_info,
)
from hoprank.evals.cache import CachedEngine, default_cache_dir
from hoprank.evals.config import ExperimentConfig
from hoprank.evals.executor import Progress, rank_items
from hoprank.evals.report import write_outputs
from hoprank.evals.results import ResultsLog
from hoprank.llm.base import LLM
from hoprank.rankers.base import Ranker

__all__ = ["RunResult", "arun_experiment", "run_experiment"]

logger = logging.getLogger(__name__)

_OUTPUTS = (
    "results.jsonl",
    "run.trec",
    "traces.jsonl",
    "metrics.json",
    "report.md",
    "metrics.png",
    "quality_latency.png",
)


def _clear_outputs(run_dir: Path) -> None:
    """Remove a run folder's outputs and manifest (``overwrite``: start over)."""
    for name in (*_OUTPUTS, "manifest.json"):
        (run_dir / name).unlink(missing_ok=True)


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


def _read_manifest(path: Path) -> dict[str, Any] | None:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise ConfigError(f"{path}: unreadable manifest ({e}); remove the folder or pass overwrite") from e
    return data if isinstance(data, dict) else None


def _engine_of(ranker: Any, engine: Any) -> Any:
    return engine if engine is not None else getattr(ranker, "engine", None)


def _changed_inputs(
    old: dict[str, Any] | None, prompt: dict[str, Any] | None, data_hash: str, model_sha: str | None
) -> str:
    """What differs between a run folder's manifest and this run: the prompt's text, the
    dataset's content or the model's weights (the config fingerprint names them, this
    checks their bytes)."""
    if old is None:
        return ""
    diffs = []
    old_prompt = old.get("prompt") or {}
    if prompt is not None and old_prompt.get("hash") not in (None, prompt["hash"]):
        diffs.append(f"prompt {old_prompt.get('ref')}, now {prompt['ref']}: its text changed")
    old_hash = (old.get("dataset") or {}).get("hash")
    if old_hash not in (None, data_hash):
        diffs.append(f"dataset content {old_hash} != {data_hash}")
    old_sha = old.get("model_sha256")
    if old_sha is not None and model_sha is not None and old_sha != model_sha:
        diffs.append(f"model weights sha256 {old_sha[:12]} != {model_sha[:12]}")
    return "; ".join(diffs)


def _model_sha256(desc: dict[str, Any] | None) -> str | None:
    if not desc:
        return None
    for k in ("sha256", "gguf_sha256", "model_sha256"):
        if desc.get(k):
            return str(desc[k])
    return None


async def arun_experiment(
    config: ExperimentConfig,
    out_dir: str | os.PathLike[str],
    *,
    ranker: Ranker | None = None,
    engine: LLM | None = None,
    retriever: Any | None = None,
    cache: str | os.PathLike[str] | bool = True,
    progress: bool | None = None,
    overwrite: bool = False,
    plots: bool = True,
    ray_num_cpus: int | None = None,
) -> RunResult:
    """Run (or resume) an experiment into ``out_dir``.

    ``ranker``/``engine``/``retriever`` objects override what the config would build
    (for SDK use and tests). ``cache``: True for the default LLM-call cache
    (``$HOPRANK_CACHE/llm-calls``), a folder, or False for none. ``progress``: a rich
    progress bar (None: only on a TTY).
    """
    run_dir = Path(out_dir)
    os.makedirs(run_dir, exist_ok=True)
    manifest_path = run_dir / "manifest.json"
    old = _read_manifest(manifest_path)
    if old is not None and old.get("fingerprint") != config.fingerprint:
        if not overwrite:
            raise ConfigError(
                f"{run_dir} holds a different experiment (fingerprint {old.get('fingerprint')} != "
                f"{config.fingerprint}); use another output folder or overwrite"
            )
        old = None
    if overwrite and old is None:
        _clear_outputs(run_dir)

    ds = load_config_dataset(config)
    items, first_stage = await asyncio.to_thread(build_items, config, ds, retriever=retriever)
    qids = [q for q, _, _ in items]

    cache_dir: Path | None = None
    if cache is not False:
        cache_dir = default_cache_dir() if cache is True else Path(cache)
    if ranker is None and config.executor == "local":
        if engine is None:
            engine = build_engine(config, cache_dir)
        elif cache_dir is not None and not isinstance(engine, CachedEngine):
            engine = CachedEngine(engine, cache_dir)
        ranker = build_ranker(config, engine)
    eng = _engine_of(ranker, engine)
    if eng is None and ranker is None and config.model is not None:
        # Ray workers build their own engines; load one here only for the manifest's describe().
        from hoprank.llm import load_engine

        engine_desc: dict[str, Any] | None = load_engine(config.model, **config.engine_params).describe()
    else:
        engine_desc = eng.describe() if eng is not None and hasattr(eng, "describe") else None

    pinfo = prompt_info(config, ranker)
    changed = _changed_inputs(old, pinfo, ds.content_hash, _model_sha256(engine_desc))
    if changed:
        if not overwrite:
            raise ConfigError(
                f"{run_dir} was started on other inputs ({changed}); its results would mix with "
                "this run's; use another output folder or overwrite"
            )
        _clear_outputs(run_dir)
        old = None
    log = ResultsLog(run_dir / "results.jsonl")
    done = log.load()
    pending = [it for it in items if it[0] not in done]
    attempt: dict[str, Any] = {
        "started_at": time.time(),
        "executor": config.executor,
        "concurrency": config.concurrency,
        "resumed": len([q for q in qids if q in done]),
        "pending": len(pending),
    }
    manifest: dict[str, Any] = {
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
        "queries": {"n": len(qids), "ids": qids},
        "ranker": {
            "name": getattr(ranker, "name", config.ranker),
            "class": type(ranker).__qualname__ if ranker is not None else None,
            "params": config.ranker_params,
        },
        "engine": engine_desc,
        "model_sha256": _model_sha256(engine_desc),
        "prompt": pinfo,
        "environment": environment(),
        "attempts": [*(old or {}).get("attempts", []), attempt],
        "started_at": (old or {}).get("started_at", attempt["started_at"]),
    }
    write_json_atomic(manifest_path, manifest, default=str)
    if done:
        logger.info(
            "%s: resuming, %d of %d queries already done", run_dir, len(qids) - len(pending), len(qids)
        )

    t0 = time.perf_counter()
    with Progress(
        len(qids), done=len(qids) - len(pending), enabled=progress, description=config.label
    ) as bar:

        def sink(rec: dict[str, Any]) -> None:
            log.append(rec)
            done[rec["qid"]] = rec
            bar.advance()

        try:
            if config.executor == "ray":
                from hoprank.evals.ray_executor import execute_ray

                await asyncio.to_thread(
                    execute_ray,
                    config,
                    pending,
                    sink,
                    ranker=ranker,
                    cache_dir=cache_dir,
                    num_cpus=ray_num_cpus,
                )
            else:
                assert ranker is not None
                await rank_items(
                    ranker, pending, concurrency=config.concurrency, top_k=config.top_k, on_record=sink
                )
        except BaseException as e:
            attempt.update(finished_at=time.time(), seconds=time.perf_counter() - t0, error=repr(e))
            manifest["status"] = "failed"
            write_json_atomic(manifest_path, manifest, default=str)
            raise

    attempt.update(finished_at=time.time(), seconds=time.perf_counter() - t0, executed=len(pending))
    if isinstance(eng, CachedEngine):
        manifest["cache"] = eng.stats()
    manifest.update(status="complete", finished_at=attempt["finished_at"])
    m = await asyncio.to_thread(
        write_outputs, run_dir, ds, qids, first_stage, done, manifest, metrics=config.metrics, plots=plots
    )
    manifest["outputs"] = sorted(n for n in os.listdir(run_dir) if not n.startswith("."))
    write_json_atomic(manifest_path, manifest, default=str)
    return RunResult(
        run_dir=run_dir,
        config=config,
        metrics=m["aggregate"],
        first_stage_metrics=m["first_stage"],
        per_query=m["per_query"],
        n_queries=len(qids),
        resumed=attempt["resumed"],
        executed=len(pending),
        manifest=manifest,
    )


def run_experiment(config: ExperimentConfig, out_dir: str | os.PathLike[str], **kwargs: Any) -> RunResult:
    """Sync facade of :func:`arun_experiment`."""
    return run_sync(arun_experiment(config, out_dir, **kwargs))
