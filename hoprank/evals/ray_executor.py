"""The Ray executor: shards the pending queries over a pool of Ray actors.

Each actor builds its ranker once (from the experiment config, with its own engine and
the shared disk cache; or from a ranker object the caller passed, which Ray pickles)
and ranks whole shards with :func:`~hoprank.evals.executor.rank_items`. The driver
appends each finished shard's records to ``results.jsonl`` as they arrive, so a run
interrupted under Ray resumes like a local one, and the outputs are the same as the
local executor's.

``ray.init`` connects to ``$RAY_ADDRESS`` when set, else starts a local instance with
``num_cpus`` CPUs (shut down again afterwards). On a multi-node cluster the cache folder
must be on a shared filesystem for the cache to be shared.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

from hoprank.errors import MissingExtra
from hoprank.evals.build import Item, build_engine, build_ranker
from hoprank.evals.config import ExperimentConfig
from hoprank.evals.executor import RecordSink, rank_items
from hoprank.rankers.base import Ranker

__all__ = ["execute_ray"]

logger = logging.getLogger(__name__)


class _RankWorker:
    """One Ray actor: a ranker built once, ranking shard after shard."""

    def __init__(
        self, config: dict[str, Any], ranker: Ranker | None, cache_dir: str | None, top_k: int | None
    ) -> None:
        cfg = ExperimentConfig.model_validate(config)
        if ranker is None:
            ranker = build_ranker(cfg, build_engine(cfg, cache_dir))
        self.ranker = ranker
        self.concurrency = cfg.concurrency
        self.top_k = top_k

    def rank(self, items: list[Item]) -> list[dict[str, Any]]:
        from hoprank._sync import run_sync

        return run_sync(rank_items(self.ranker, items, concurrency=self.concurrency, top_k=self.top_k))


def execute_ray(
    config: ExperimentConfig,
    items: Sequence[Item],
    on_record: RecordSink,
    *,
    ranker: Ranker | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    num_cpus: int | None = None,
    workers: int | None = None,
    shard_size: int | None = None,
) -> None:
    """Rank ``items`` on Ray actors, handing every record to ``on_record`` (blocking)."""
    try:
        import ray as _ray
        from ray.util import ActorPool
    except ImportError as e:
        raise MissingExtra("ray", "ray") from e
    ray: Any = _ray
    if not items:
        return
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus or min(os.cpu_count() or 1, 8), **kwargs)
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_workers = max(1, min(workers or cpus, len(items)))
        size = shard_size or max(1, math.ceil(len(items) / (4 * n_workers)))
        shards = [list(items[i : i + size]) for i in range(0, len(items), size)]
        actor_cls = ray.remote(num_cpus=1)(_RankWorker)
        cache = os.fspath(cache_dir) if cache_dir is not None else None
        cfg = config.model_dump(mode="json")
        actors = [actor_cls.remote(cfg, ranker, cache, config.top_k) for _ in range(n_workers)]
        logger.info("ray: %d queries in %d shards over %d workers", len(items), len(shards), n_workers)
        pool = ActorPool(actors)
        try:
            for records in pool.map_unordered(lambda a, shard: a.rank.remote(shard), shards):
                for rec in records:
                    on_record(rec)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause  # RayTaskError always sets it: the task's own exception
            if isinstance(cause, BaseException):
                raise cause from e
            raise
        finally:
            for a in actors:
                ray.kill(a)
    finally:
        if started:
            ray.shutdown()
