"""Turning an :class:`ExperimentConfig` into the pieces of a run: the dataset and its
query selection, the first-stage candidates, the engine (cached) and the ranker.

Shared by the local and the Ray executor (Ray workers rebuild engine and ranker from
the config), and by the manifest writer.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from hoprank.errors import ConfigError, DatasetError
from hoprank.evals.config import ExperimentConfig
from hoprank.evals.dataset import Dataset
from hoprank.evals.formats import load_dataset
from hoprank.llm.base import LLM
from hoprank.llm.engines.cached import CachedEngine
from hoprank.rankers import make_ranker
from hoprank.rankers.base import Ranker
from hoprank.runs import Run, read_run
from hoprank.types import Document

__all__ = [
    "Item",
    "build_engine",
    "build_items",
    "build_ranker",
    "environment",
    "limit_judged",
    "load_config_dataset",
    "prompt_info",
]

logger = logging.getLogger(__name__)

Item = tuple[str, str, list[Document]]
"""(qid, query text, first-stage candidates)."""


def load_config_dataset(config: ExperimentConfig) -> Dataset:
    ds = load_dataset(config.dataset, format=config.dataset_format)
    if config.relevance_level is not None:
        ds.set_relevance_level(config.relevance_level, "argument")
    return ds


def _first_stage_run(config: ExperimentConfig, ds: Dataset, qids: list[str], retriever: Any | None) -> Run:
    fs = config.first_stage
    if retriever is not None or (fs is not None and fs.startswith("retriever:")):
        if retriever is None:
            assert fs is not None
            retriever = build_retriever(fs.removeprefix("retriever:"), list(ds.corpus.values()))
        from hoprank._sync import run_sync

        texts = [ds.queries[q].text for q in qids]
        hits = run_sync(retriever.search_many(texts, k=config.depth))
        return {q: [(d.id, float(d.score or 0.0)) for d in docs] for q, docs in zip(qids, hits, strict=True)}
    if fs is not None and (
        os.sep in fs or fs.endswith((".tsv", ".trec", ".txt", ".run")) or Path(fs).is_file()
    ):
        return read_run(fs)
    return ds.run(fs)


def build_retriever(name: str, docs: list[Document]) -> Any:
    """A first-stage retriever over ``docs``: ``bm25`` or ``dense``."""
    if name == "bm25":
        from hoprank.tools.bm25 import BM25Retriever

        return BM25Retriever.from_documents(docs)
    if name == "dense":
        from hoprank.tools.dense import DenseRetriever

        return DenseRetriever.from_documents(docs)
    raise ConfigError(f"unknown first-stage retriever {name!r}; use retriever:bm25 or retriever:dense")


def _judged(ds: Dataset, qid: str) -> bool:
    """Whether a query has judgments to score it by: qrels, or supporting documents."""
    return bool(ds.qrels.get(qid)) or bool(ds.queries[qid].supporting)


def limit_judged(ds: Dataset, qids: list[str], limit: int | None) -> tuple[list[str], int]:
    """The first ``limit`` *judged* queries of ``qids`` (all of them without a limit) and how
    many unjudged ones were passed over to get them. A dataset with no judged query among
    ``qids`` keeps its first ``limit`` queries."""
    if limit is None:
        return qids, 0
    judged = [q for q in qids if _judged(ds, q)]
    if not judged:
        return qids[:limit], 0
    picked = judged[:limit]
    return picked, qids.index(picked[-1]) + 1 - len(picked)


def build_items(
    config: ExperimentConfig, ds: Dataset, *, retriever: Any | None = None
) -> tuple[list[Item], Run, int]:
    """The selected queries with their first-stage candidates, the first-stage run and how
    many unjudged queries ``config.limit`` passed over (it takes the first N judged ones)."""
    qids = ds.query_ids(config.queries)
    is_retriever = retriever is not None or (config.first_stage or "").startswith("retriever:")
    if not is_retriever:
        run = _first_stage_run(config, ds, qids, None)
        qids = [q for q in qids if q in run]
    qids, skipped = limit_judged(ds, qids, config.limit)
    if skipped:
        logger.info("--limit %d: skipped %d queries without qrels", config.limit, skipped)
    if is_retriever:
        run = _first_stage_run(config, ds, qids, retriever)
    if not qids:
        raise DatasetError(f"no queries of dataset {ds.name!r} have first-stage candidates")
    items = [(q, ds.queries[q].text, ds.candidates(q, run, config.depth)) for q in qids]
    return items, {q: run[q][: config.depth] for q in qids}, skipped


def build_engine(config: ExperimentConfig, cache_dir: str | os.PathLike[str] | None) -> LLM | None:
    """The engine of ``config.model`` (None without a model), wrapped in a disk cache
    unless ``cache_dir`` is None."""
    if config.model is None:
        return None
    from hoprank.llm import load_engine

    engine = load_engine(config.model, **config.engine_params)
    return CachedEngine(engine, cache_dir) if cache_dir is not None else engine


def build_ranker(config: ExperimentConfig, engine: LLM | None) -> Ranker:
    """``hoprank.rankers.make_ranker(config.ranker, engine=..., prompt=..., **params)``."""
    params = dict(config.ranker_params)
    if config.prompt is not None:
        params["prompt"] = config.prompt
    ranker: Ranker = make_ranker(config.ranker, engine=engine, **params)
    return ranker


def prompt_info(config: ExperimentConfig, ranker: Any) -> dict[str, Any] | None:
    """name, version, hash and ref of the prompt the ranker uses (if any).

    A hoprank ranker says it itself (:meth:`~hoprank.rankers.base.BaseRanker.prompt_template`,
    a wrapper's from its inner ranker, ICR's template included); without a ranker (Ray
    workers build their own) it is the config's prompt, else the registered ranker's
    default prompt."""
    from hoprank.prompts import load_prompt
    from hoprank.rankers.base import BaseRanker, prompt_summary
    from hoprank.rankers.registry import ranker_spec

    if isinstance(ranker, BaseRanker):
        tpl = ranker.prompt_template()
        if tpl is not None:
            return prompt_summary(tpl)
    name = config.prompt
    if name is None and ranker is None:
        name = ranker_spec(config.ranker).default_prompt
    return prompt_summary(load_prompt(name)) if name is not None else None


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions of Python and the packages that shape results (no heavy imports)."""
    from hoprank._version import __version__

    return {
        "hoprank": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "vllm": _version("vllm"),
        "openai": _version("openai"),
        "ray": _version("ray"),
        "host": platform.node(),
        "pid": os.getpid(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
