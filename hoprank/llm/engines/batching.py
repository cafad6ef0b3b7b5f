"""Cross-request micro-batching: concurrent single requests share one batched call.

A listwise ranker asks for one window at a time, and the windows of one query depend
on each other. Several queries ranked concurrently (``ranker.arank_many(...,
concurrency=16)``) therefore issue many *independent* single requests at about the
same moment. :class:`MicroBatcher` coalesces them: requests that arrive while no batch
is running wait at most ``max_wait_s`` for company, then go out together (at most
``max_batch_size`` per call); requests that arrive while a batch is running queue up
and go out together as soon as it finishes. :class:`BatchingEngine` wraps any engine
so that its ``next_token_logprobs`` (FIRST, pointwise scoring) goes through one
batcher and reaches the engine as ``next_token_logprobs_batch`` calls (one left-padded
forward per batch in :class:`~hoprank.llm.engines.transformers_engine.TransformersEngine`, built
by :func:`~hoprank.llm.runtime.forward.last_token_outputs`).

Semantics are those of unbatched calls: each caller gets its own result; when a batched
call fails, its requests are retried one at a time so that an error (e.g.
:class:`~hoprank.errors.ContextOverflow`) reaches only the request that caused it;
cancelled callers are dropped from batches not yet sent. State is kept per event loop
(the sync facades run each call on a loop of its own); requests of different loops are
never mixed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hoprank.errors import HoprankError, InvalidInput
from hoprank.llm.base import LLM, LogprobRequest, SyncFacade, TokenLogprobs
from hoprank.llm.engines._common import BatchOfOne, EngineWrapper

__all__ = ["BatchStats", "BatchingEngine", "MicroBatcher"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    """What a batcher did: batched calls made, requests served, and the batch sizes."""

    calls: int = 0
    requests: int = 0
    sizes: list[int] = field(default_factory=list)
    fallbacks: int = 0  # batches that failed and were retried one request at a time

    @property
    def mean_batch(self) -> float:
        return self.requests / self.calls if self.calls else 0.0


class _LoopState(Generic[T, R]):
    __slots__ = ("pending", "running", "tasks", "timer")

    def __init__(self) -> None:
        self.pending: list[tuple[T, asyncio.Future[R]]] = []
        self.running = False
        self.timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[None]] = set()


class MicroBatcher(Generic[T, R]):
    """Coalesce concurrent :meth:`submit` calls into calls of ``run_batch(items)``.

    ``run_batch`` gets a list of at most ``max_batch_size`` items and must return one
    result per item, in order. At most one batch per event loop is in flight at a time
    (a second one would only wait for the engine's lock while holding requests that
    could have joined it).
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch_size: int = 16,
        max_wait_s: float = 0.005,
    ) -> None:
        if max_batch_size < 1:
            raise InvalidInput("max_batch_size must be >= 1")
        if max_wait_s < 0:
            raise InvalidInput("max_wait_s must be >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState[T, R]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # guards _states and stats across loops/threads

    def _state(self, loop: asyncio.AbstractEventLoop) -> _LoopState[T, R]:
        with self._lock:
            st = self._states.get(loop)
            if st is None:
                st = self._states[loop] = _LoopState()
            return st

    async def submit(self, item: T) -> R:
        """The result of ``item``, computed in a batch with concurrent submissions."""
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Results of ``items`` (queued together; may span several batches)."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        st = self._state(loop)
        futures: list[asyncio.Future[R]] = []
        for item in items:
            fut: asyncio.Future[R] = loop.create_future()
            st.pending.append((item, fut))
            futures.append(fut)
        self._kick(st, loop)
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def _kick(self, st: _LoopState[T, R], loop: asyncio.AbstractEventLoop) -> None:
        st.pending = [(i, f) for i, f in st.pending if not f.done()]
        if st.running or not st.pending:
            return
        if len(st.pending) >= self.max_batch_size or self.max_wait_s == 0:
            self._start(st, loop)
        elif st.timer is None:
            st.timer = loop.call_later(self.max_wait_s, self._on_timer, st, loop)

    def _on_timer(self, st: _LoopState[T, R], loop: asyncio.AbstractEventLoop) -> None:
        st.timer = None
        if not st.running:
            st.pending = [(i, f) for i, f in st.pending if not f.done()]
            if st.pending:
                self._start(st, loop)

    def _start(self, st: _LoopState[T, R], loop: asyncio.AbstractEventLoop) -> None:
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        batch, st.pending = st.pending[: self.max_batch_size], st.pending[self.max_batch_size :]
        st.running = True
        task = loop.create_task(self._flush(st, loop, batch))
        st.tasks.add(task)
        task.add_done_callback(st.tasks.discard)

    async def _flush(
        self, st: _LoopState[T, R], loop: asyncio.AbstractEventLoop, batch: list[tuple[T, asyncio.Future[R]]]
    ) -> None:
        try:
            await self._serve(batch)
        finally:
            st.running = False
            # Requests that queued while this batch ran have waited long enough.
            st.pending = [(i, f) for i, f in st.pending if not f.done()]
            if st.pending and not loop.is_closed():
                self._start(st, loop)

    async def _serve(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [i for i, _ in batch]
        futures = [f for _, f in batch]
        try:
            results = list(await self._run_batch(items))
        except asyncio.CancelledError:
            for f in futures:
                f.cancel()
            raise
        except Exception as e:
            await self._serve_one_by_one(batch, e)
            return
        except BaseException as e:  # KeyboardInterrupt, SystemExit: no caller may hang
            for f in futures:
                _settle(f, exc=e)
            raise
        self._count(len(items))
        if len(results) != len(items):  # a bug in run_batch: no retry can fix it
            bug = HoprankError(f"batched call returned {len(results)} results for {len(items)} requests")
            for fut in futures:
                _settle(fut, exc=bug)
            return
        for fut, res in zip(futures, results, strict=True):
            _settle(fut, result=res)

    async def _serve_one_by_one(self, batch: list[tuple[T, asyncio.Future[R]]], error: Exception) -> None:
        """After a failed batched call: each request alone, so an error reaches only its caller."""
        futures = [f for _, f in batch]
        self._count(len(batch), fallback=len(batch) > 1)
        if len(batch) == 1:
            _settle(futures[0], exc=error)
            return
        logger.debug("batched call of %d failed (%s); retrying one at a time", len(batch), error)
        for item, fut in batch:
            if fut.done():
                continue
            try:
                one = list(await self._run_batch([item]))
                self._count(1)
                if len(one) != 1:
                    raise HoprankError(f"batched call returned {len(one)} results for 1 request")
                _settle(fut, result=one[0])
            except asyncio.CancelledError:
                for f in futures:
                    f.cancel()
                raise
            except Exception as e1:
                _settle(fut, exc=e1)
            except BaseException as e1:
                for f in futures:
                    _settle(f, exc=e1)
                raise

    def _count(self, n: int, *, fallback: bool = False) -> None:
        with self._lock:
            self.stats.calls += 1
            self.stats.requests += n
            self.stats.sizes.append(n)
            self.stats.fallbacks += int(fallback)

    def reset_stats(self) -> BatchStats:
        """Return the statistics so far and start counting afresh."""
        with self._lock:
            old, self.stats = self.stats, BatchStats()
            return old


def _settle(fut: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class BatchingEngine(EngineWrapper, BatchOfOne, SyncFacade):
    """An engine whose next-token log-probability requests are micro-batched.

    Wraps any engine (``TransformersEngine``, ``VLLMEngine``, ``OpenAIEngine``...):
    concurrent ``next_token_logprobs`` / ``next_token_logprobs_batch`` calls are
    coalesced by a :class:`MicroBatcher` into ``engine.next_token_logprobs_batch`` calls
    of at most ``max_batch_size`` requests (default: the engine's own
    ``max_batch_size``, else 16). It declares the wrapped engine's capabilities and
    implements their protocols explicitly: ``generate``, ``render``, ``attention_rows``
    (not batched) and ``attention_window`` go straight to the wrapped engine (or raise
    :class:`~hoprank.errors.CapabilityMissing` where it lacks them); anything else of the
    wrapped engine is reached through :attr:`engine`. Use it with concurrent ranking::

        engine = BatchingEngine(TransformersEngine("qwen2.5-coder-0.5b"))
        rankings = await FIRST(engine).arank_many(items, concurrency=16)

    ``stats`` counts the batched calls made; ``describe()`` adds the batching settings
    (batched and single forwards agree only up to floating-point rounding).
    """

    def __init__(self, engine: LLM, *, max_batch_size: int | None = None, max_wait_ms: float = 5.0) -> None:
        size = max_batch_size or int(getattr(engine, "max_batch_size", 16) or 16)
        super().__init__(engine)
        self.engine = engine
        self._batcher: MicroBatcher[LogprobRequest, TokenLogprobs] = MicroBatcher(
            self._run, max_batch_size=size, max_wait_s=max_wait_ms / 1000.0
        )

    async def _run(self, requests: list[LogprobRequest]) -> list[TokenLogprobs]:
        return list(await self.engine.next_token_logprobs_batch(requests))

    @property
    def wrapped_engine(self) -> LLM:
        return self.engine

    @property
    def stats(self) -> BatchStats:
        return self._batcher.stats

    @property
    def max_batch_size(self) -> int:
        return self._batcher.max_batch_size

    def reset_stats(self) -> BatchStats:
        return self._batcher.reset_stats()

    async def next_token_logprobs_batch(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        return await self._batcher.submit_many(list(requests))

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["micro_batching"] = {
            "max_batch_size": self._batcher.max_batch_size,
            "max_wait_ms": self._batcher.max_wait_s * 1000.0,
        }
        return out

    def __repr__(self) -> str:
        return f"BatchingEngine({self.engine!r}, max_batch_size={self._batcher.max_batch_size})"
