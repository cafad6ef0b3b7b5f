"""The torch worker: one thread for in-process model calls, with cancellable, bounded
and counted jobs.

One thread, because torch's CPU thread pool belongs to the calling thread (see
:mod:`hoprank.llm.engines.transformers_engine`). A :class:`TorchWorker` is an object:
an engine owns or receives one (``TransformersEngine(worker=...)``); engines given none
share :func:`default_worker`, the process's single default instance, whose counters the
HTTP service reports. Every job carries a :class:`CancelToken`:

* when the asyncio task awaiting a job (:meth:`TorchWorker.run`) is cancelled (a request
  timeout, a client that went away, a user cancelling an ``arank`` task), a job that has
  not started is dropped and a running job's token is set (:meth:`Job.cancel`);
* model code running on the worker calls :func:`check_cancelled` before each forward
  pass, and generation stops at the next token through a stopping criterion reading
  :func:`current_token` (:func:`cancel_stopping_criteria`), so the worker is free again
  within one forward pass;
* at most ``max_pending`` jobs wait (queued, not yet running; default
  ``$HOPRANK_WORKER_MAX_PENDING``, else 256); one more raises :class:`EngineBusy` at
  once instead of growing the queue without bound.

:meth:`TorchWorker.stats` counts jobs submitted, dropped, stopped and rejected, and the
seconds the worker spent on jobs after their caller had gone (``abandoned_seconds``).
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
from typing import Any, Generic, TypeVar

from hoprank.errors import ConfigError, HoprankError

__all__ = [
    "CancelToken",
    "EngineBusy",
    "Job",
    "TorchWorker",
    "WorkCancelled",
    "WorkerStats",
    "cancel_stopping_criteria",
    "check_cancelled",
    "current_token",
    "default_worker",
]

T = TypeVar("T")

WORKER_PREFIX = "hoprank-torch"
DEFAULT_MAX_PENDING = 256
MAX_PENDING_ENV = "HOPRANK_WORKER_MAX_PENDING"


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
    """Counters of one torch worker (a snapshot: :meth:`TorchWorker.stats`)."""

    submitted: int = 0
    completed: int = 0
    dropped: int = 0  # cancelled before they started: never ran
    stopped: int = 0  # cancelled while running: stopped at the next safe point
    rejected: int = 0  # refused with EngineBusy
    pending: int = 0  # waiting for the worker now
    running: int = 0  # running now (0 or 1)
    abandoned_seconds: float = 0.0  # worker time spent on jobs after their caller had gone


@dataclass(frozen=True)
class Job(Generic[T]):
    """A job submitted to a :class:`TorchWorker`: its future and its cancel token."""

    future: concurrent.futures.Future[T]
    token: CancelToken

    def cancel(self) -> None:
        """Drop the job when it has not started; flag it when it has (it stops at its
        next :func:`check_cancelled` or generated token)."""
        self.token.cancel()
        self.future.cancel()


# The job running on this thread: its token and its worker (set by TorchWorker._job).
_local = threading.local()


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


class TorchWorker:
    """One thread on which in-process model calls run, as cancellable, bounded, counted jobs.

    ``max_pending`` bounds the jobs waiting (``None``: ``$HOPRANK_WORKER_MAX_PENDING``
    read at each submission, else 256). The thread starts with the first job;
    :meth:`shutdown` ends it.
    """

    def __init__(self, *, max_pending: int | None = None, name: str = WORKER_PREFIX) -> None:
        if max_pending is not None and max_pending < 1:
            raise ConfigError("max_pending must be >= 1")
        self._max_pending = max_pending
        self.name = name
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._guard = threading.Lock()
        self._stats = WorkerStats()
        self._stats_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TorchWorker({self.name!r}, max_pending={self.max_pending})"

    @property
    def max_pending(self) -> int:
        if self._max_pending is not None:
            return self._max_pending
        raw = os.environ.get(MAX_PENDING_ENV, "")
        return max(1, int(raw)) if raw.strip().isdigit() else DEFAULT_MAX_PENDING

    def stats(self) -> WorkerStats:
        """A consistent copy of this worker's counters."""
        with self._stats_lock:
            return dataclasses.replace(self._stats)

    def on_worker_thread(self) -> bool:
        """True when called from a job running on this worker."""
        return getattr(_local, "worker", None) is self

    def _thread(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._guard:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=self.name
                )
            return self._executor

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the thread once the queued jobs are done (a later job starts a new one)."""
        with self._guard:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait)

    # ------------------------------------------------------------------ jobs

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Job[T]:
        """Queue ``fn(*args, **kwargs)``; :class:`EngineBusy` when ``max_pending`` jobs wait."""
        limit = self.max_pending
        with self._stats_lock:
            if self._stats.pending >= limit:
                self._stats.rejected += 1
                raise EngineBusy(self._stats.pending)
            self._stats.pending += 1
            self._stats.submitted += 1
        token = CancelToken()
        try:
            fut = self._thread().submit(self._job, token, fn, args, kwargs)
        except BaseException:
            with self._stats_lock:
                self._stats.pending -= 1
            raise
        fut.add_done_callback(self._on_done)
        return Job(fut, token)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the worker and wait (runs inline when already on it)."""
        if self.on_worker_thread():
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).future.result()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the worker and await it; cancelling the awaiting task cancels the
        job (:meth:`Job.cancel`)."""
        job = self.submit(fn, *args, **kwargs)
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            job.cancel()
            raise

    def _job(
        self, token: CancelToken, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        with self._stats_lock:
            self._stats.pending -= 1
            self._stats.running += 1
        start = time.monotonic()
        outer = (getattr(_local, "token", None), getattr(_local, "worker", None))
        _local.token, _local.worker = token, self
        try:
            check_cancelled()
            result = fn(*args, **kwargs)
            check_cancelled()  # generation stopped early by the token is not a result
            return result
        finally:
            _local.token, _local.worker = outer
            end = time.monotonic()
            with self._stats_lock:
                self._stats.running -= 1
                if token.cancelled:
                    self._stats.stopped += 1
                    self._stats.abandoned_seconds += end - max(start, token.cancelled_at or start)
                else:
                    self._stats.completed += 1

    def _on_done(self, fut: concurrent.futures.Future[Any]) -> None:
        if fut.cancelled():  # dropped before it started: _job never ran
            with self._stats_lock:
                self._stats.pending -= 1
                self._stats.dropped += 1


_default: TorchWorker | None = None
_default_guard = threading.Lock()


def default_worker() -> TorchWorker:
    """The process's default :class:`TorchWorker`, shared by the engines given none
    (created on first use; its thread starts with its first job)."""
    global _default
    with _default_guard:
        if _default is None:
            _default = TorchWorker()
        return _default


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
