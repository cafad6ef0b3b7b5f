"""The sync facade: run a coroutine to completion from synchronous code.

Library code is async. Sync wrappers call :func:`run_sync`, which uses ``asyncio.run``
when no loop is running in this thread and otherwise runs the coroutine on a fresh loop
in a worker thread (so calling a sync method from inside a notebook or an async server
does not deadlock or raise "event loop is already running").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

from hoprank.errors import InvalidInput

T = TypeVar("T")

__all__ = ["gather_bounded", "run_sync"]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hoprank-sync") as ex:
        return ex.submit(asyncio.run, coro).result()


async def gather_bounded(aws: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """Run awaitables with at most ``limit`` in flight; results keep their order.

    The first failure (or cancellation of the caller) cancels every other task, waits
    for them to finish, and is re-raised: nothing keeps running in the background.
    """
    if limit < 1:
        raise InvalidInput(f"concurrency must be >= 1, got {limit}")
    sem = asyncio.Semaphore(limit)

    async def one(aw: Awaitable[T]) -> T:
        async with sem:
            return await aw

    tasks = [asyncio.ensure_future(one(aw)) for aw in aws]
    if not tasks:
        return []
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
