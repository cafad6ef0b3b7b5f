"""The sync facade: run a coroutine to completion from synchronous code.

Library code is async. Sync wrappers call :func:`run_sync`, which uses ``asyncio.run``
when no loop is running in this thread and otherwise runs the coroutine on a fresh loop
in a worker thread (so calling a sync method from inside a notebook or an async server
does not deadlock or raise "event loop is already running").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["run_sync"]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hoprank-sync") as ex:
        return ex.submit(asyncio.run, coro).result()
