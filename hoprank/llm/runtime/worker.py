"""The torch worker: one thread for every in-process model call, with cancellable,
bounded and counted jobs.

One thread, because torch's CPU thread pool belongs to the calling thread (see
:mod:`hoprank.llm.engines.transformers_engine`). Every job carries a :class:`CancelToken`:

* when the asyncio task awaiting a job is cancelled (a request timeout, a client that
  went away, a user cancelling an ``arank`` task), a job that has not started is dropped
  and a running job's token is set;
* model code running on the worker calls :func:`check_cancelled` before each forward
  pass, and generation stops at the next token through a stopping criterion reading
  :func:`current_token` (see ``TransformersEngine``), so the worker is free again
  within one forward pass;
* at most ``max_pending`` jobs wait (queued, not yet running); one more raises
  :class:`EngineBusy` at once instead of growing the queue without bound.

:data:`WORKER_STATS` counts jobs submitted, dropped, stopped and rejected, and the seconds
the worker spent on jobs after their caller had gone (``abandoned_seconds``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hoprank.errors import HoprankError

__all__ = [
    "WORKER_STATS",
    "CancelToken",
    "EngineBusy",
    "WorkCancelled",
    "WorkerStats",
    "cancel_stopping_criteria",
    "check_cancelled",
    "current_token",
    "on_torch_worker",
    "run_on_torch_worker",
    "torch_worker",
    "worker_stats_snapshot",
]

T = TypeVar("T")

WORKER_PREFIX = "hoprank-torch"
DEFAULT_MAX_PENDING = 256


class WorkCancelled(HoprankError):
    """Raised on the worker when a job's caller has gone; it never reaches that caller
    (whose own task was cancelled), only the worker's bookkeeping."""


class EngineBusy(HoprankError):
    """The torch worker's queue is full (``max_pending`` jobs waiting); retry later."""

    def __init__(self, pending: int) -> None:
        super().__init__(f"engine busy: {pending} model calls already waiting; retry later")
        self.pending = pending


class CancelToken:
    """A thread-safe flag set when the caller of a job no longer waits for it."""

    __slots__ = ("_event", "cancelled_at")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.cancelled_at: float | None = None

    def cancel(self) -> None:
        if not self._event.is_set():
            self.cancelled_at = time.monotonic()
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class WorkerStats:
    """Counters of the torch worker (read them from any thread; updated under a lock)."""

    submitted: int = 0
    completed: int = 0
    dropped: int = 0  # cancelled before they started: never ran
    stopped: int = 0  # cancelled while running: stopped at the next safe point
    rejected: int = 0  # refused with EngineBusy
    pending: int = 0  # waiting for the worker now
    running: int = 0  # running now (0 or 1)
    abandoned_seconds: float = 0.0  # worker time spent on jobs after their caller had gone


WORKER_STATS = WorkerStats()
_stats_lock = threading.Lock()
_local = threading.local()
_worker: concurrent.futures.ThreadPoolExecutor | None = None
_worker_guard = threading.Lock()


def worker_stats_snapshot() -> WorkerStats:
    """A consistent copy of :data:`WORKER_STATS`."""
    with _stats_lock:
        return dataclasses.replace(WORKER_STATS)


def _max_pending() -> int:
    raw = os.environ.get("HOPRANK_WORKER_MAX_PENDING", "")
    return max(1, int(raw)) if raw.strip().isdigit() else DEFAULT_MAX_PENDING


def torch_worker() -> concurrent.futures.ThreadPoolExecutor:
    """The single thread on which every in-process model call runs (created lazily)."""
    global _worker
    with _worker_guard:
        if _worker is None:
            _worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=WORKER_PREFIX)
        return _worker


def current_token() -> CancelToken | None:
    """The token of the job running on this thread (``None`` outside a worker job)."""
    token: CancelToken | None = getattr(_local, "token", None)
    return token


def check_cancelled() -> None:
    """Raise :class:`WorkCancelled` when the running job's caller has gone (call it
    before each forward pass)."""
    token = current_token()
    if token is not None and token.cancelled:
        raise WorkCancelled("the caller of this model call has gone")


def _job(token: CancelToken, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    with _stats_lock:
        WORKER_STATS.pending -= 1
        WORKER_STATS.running += 1
    start = time.monotonic()
    outer = getattr(_local, "token", None)
    _local.token = token
    try:
        check_cancelled()
        result = fn(*args, **kwargs)
        check_cancelled()  # generation stopped early by the token is not a result
        return result
    finally:
        _local.token = outer
        end = time.monotonic()
        with _stats_lock:
            WORKER_STATS.running -= 1
            if token.cancelled:
                WORKER_STATS.stopped += 1
                WORKER_STATS.abandoned_seconds += end - max(start, token.cancelled_at or start)
            else:
                WORKER_STATS.completed += 1


def _on_done(fut: concurrent.futures.Future[Any]) -> None:
    if fut.cancelled():  # dropped before it started: _job never ran
        with _stats_lock:
            WORKER_STATS.pending -= 1
            WORKER_STATS.dropped += 1


def _submit(
    token: CancelToken, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> concurrent.futures.Future[T]:
    limit = _max_pending()
    with _stats_lock:
        if WORKER_STATS.pending >= limit:
            WORKER_STATS.rejected += 1
            raise EngineBusy(WORKER_STATS.pending)
        WORKER_STATS.pending += 1
        WORKER_STATS.submitted += 1
    try:
        fut = torch_worker().submit(_job, token, fn, args, kwargs)
    except BaseException:
        with _stats_lock:
            WORKER_STATS.pending -= 1
        raise
    fut.add_done_callback(_on_done)
    return fut


def on_torch_worker(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on the torch worker thread and wait (runs inline when already there)."""
    if threading.current_thread().name.startswith(WORKER_PREFIX):
        return fn(*args, **kwargs)
    return _submit(CancelToken(), fn, args, kwargs).result()


async def run_on_torch_worker(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on the torch worker and await it; cancelling the awaiting task drops
    the job when it has not started and sets its token when it has."""
    token = CancelToken()
    fut = _submit(token, fn, args, kwargs)
    try:
        return await asyncio.wrap_future(fut)
    except asyncio.CancelledError:
        token.cancel()
        fut.cancel()
        raise


def cancel_stopping_criteria() -> Any:
    """A stopping criterion that ends generation at the next token once the running
    job's caller has gone (:func:`current_token`; transformers' ``generate``)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    token = current_token()

    class _Cancelled(StoppingCriteria):  # type: ignore[misc,unused-ignore]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            stop = token is not None and token.cancelled
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Cancelled()])
