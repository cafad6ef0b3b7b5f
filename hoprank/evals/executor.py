"""Executing a ranker over query items: the local executor (bounded concurrency) and
the progress display. The Ray executor (:mod:`hoprank.evals.ray_executor`) shards the
same items and runs :func:`rank_items` on each shard.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from hoprank.errors import InvalidInput
from hoprank.evals.build import Item
from hoprank.evals.results import make_record
from hoprank.llm.engines.cached import count_calls
from hoprank.rankers.base import Ranker

__all__ = ["Progress", "RecordSink", "rank_items"]

logger = logging.getLogger(__name__)

RecordSink = Callable[[dict[str, Any]], None]


async def rank_items(
    ranker: Ranker,
    items: Sequence[Item],
    *,
    concurrency: int = 1,
    top_k: int | None = None,
    on_record: RecordSink | None = None,
) -> list[dict[str, Any]]:
    """Rank every item with at most ``concurrency`` queries in flight.

    Each finished query's record goes to ``on_record`` at once (the runner appends it
    to ``results.jsonl``); it counts the query's LLM-cache hits and misses and is flagged
    ``cached`` when any call came from the cache. The first failure cancels the queries in flight and is raised
    with a note naming its query; records already delivered stay delivered.
    """
    if concurrency < 1:
        raise InvalidInput("concurrency must be >= 1")
    sem = asyncio.Semaphore(concurrency)
    records: list[dict[str, Any]] = []

    failed = False

    async def one(item: Item) -> None:
        nonlocal failed
        qid, text, docs = item
        async with sem:
            if failed:  # no new query starts after a failure
                return
            try:
                with count_calls() as counts:
                    ranking = await ranker.arank(text, docs, top_k=top_k)
            except Exception as e:
                failed = True
                if hasattr(e, "add_note"):
                    e.add_note(f"(while ranking query {qid!r})")
                logger.error("query %s failed: %s: %s", qid, type(e).__name__, e)
                raise
        rec = make_record(qid, ranking, n_candidates=len(docs), hits=counts.hits, misses=counts.misses)
        records.append(rec)
        if on_record is not None:
            on_record(rec)

    tasks = [asyncio.create_task(one(it)) for it in items]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return records


class Progress:
    """A ``rich`` progress bar with ETA, or a no-op when disabled / not a TTY."""

    def __init__(
        self, total: int, *, done: int = 0, description: str = "ranking", enabled: bool | None = None
    ):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = enabled and total > 0
        self._bar: Any = None
        self._task: Any = None
        self.total = total
        self.done = done
        self.description = description

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.done)
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
