"""What the service holds between requests: the shared engine, cached rankers, limits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from hoprank.errors import CapabilityMissing, ConfigError, InvalidInput
from hoprank.llm.base import LLM, AsyncCloseable
from hoprank.llm.runtime.worker import EngineBusy
from hoprank.rankers.base import Ranker
from hoprank.rankers.registry import check_ranker_params
from hoprank.server.limits import ConcurrencyLimiter, Overloaded
from hoprank.server.logs import Redactor
from hoprank.server.metrics import Metrics
from hoprank.server.settings import ServerSettings
from hoprank.types import Document, Usage

__all__ = ["AskOutcome", "Asker", "ClientDisconnected", "RankerFactory", "RequestTimeout", "ServiceState"]

logger = logging.getLogger("hoprank.server")

T = TypeVar("T")

RankerFactory = Callable[..., Ranker]
"""``factory(name, engine=engine, **params) -> Ranker`` (default: :func:`hoprank.rankers.make_ranker`)."""


class ClientDisconnected(Exception):
    """The client went away before the answer was ready; its work was cancelled (logged
    with status 499, which nobody receives)."""

    def __init__(self) -> None:
        super().__init__("the client closed the connection; the request was cancelled")


class RequestTimeout(Exception):
    """The request did not finish within ``request_timeout_s`` (answered with 504)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"request did not finish within {seconds:g} s")
        self.seconds = seconds


@dataclass
class AskOutcome:
    """What ``/v1/ask`` returns: the answer and the evidence documents it cites."""

    answer: str
    citations: list[Document]
    evidence: list[Document] = field(default_factory=list)
    sub_questions: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


class Asker(Protocol):
    """Answers a question over the configured corpus."""

    async def __call__(self, question: str, *, top_k: int) -> AskOutcome: ...


def default_ranker_factory(name: str, engine: LLM | None = None, **params: Any) -> Ranker:
    from hoprank.rankers import make_ranker

    ranker: Ranker = make_ranker(name, engine=engine, **params)
    return ranker


def load_engine_from_settings(settings: ServerSettings) -> LLM:
    """Load the engine named by ``settings.model`` (blocking; run it in a thread)."""
    from hoprank.llm.spec import EngineSpec

    key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    spec = EngineSpec(settings.model, settings.base_url, key, options=settings.engine_options)
    return spec.load()


class ServiceState:
    """The engine (loaded once), rankers built per name on demand and cached, the
    concurrency limiter, metrics and the redactor."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        engine: LLM | None = None,
        rankers: Mapping[str, Ranker] | None = None,
        ranker_factory: RankerFactory | None = None,
        decomposer: Any | None = None,
        asker: Asker | None = None,
        metrics: Metrics,
        redactor: Redactor,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self._owns_engine = False
        self._rankers: dict[str, Ranker] = dict(rankers or {})
        self._factory = ranker_factory or default_ranker_factory
        if ranker_factory is None:  # the registry's rankers: refuse bad parameters at startup
            for name, params in settings.ranker_params.items():
                check_ranker_params(name, params)
        self._ranker_lock = asyncio.Lock()
        self.decomposer = decomposer
        self.asker = asker
        self.metrics = metrics
        self.redactor = redactor
        self.limiter = ConcurrencyLimiter(settings.max_concurrency, settings.max_queue)
        self.disconnect_poll_s = 0.1
        metrics.queued.set_function(lambda: self.limiter.queued)
        metrics.running.set_function(lambda: self.limiter.running)

    @property
    def ranker_names(self) -> list[str]:
        return list(dict.fromkeys([*self.settings.rankers, *self._rankers]))

    async def startup(self) -> None:
        """Load the engine once unless one was given.

        The load runs in the event-loop thread on purpose (nothing is served before
        startup ends anyway): measured here, a transformers model loaded in a worker
        thread made every later forward 5-10x slower on CPU (OpenMP thread teams
        spinning against each other), while loading in the loop thread did not.
        """
        if self.engine is None and self.settings.model:
            logger.info("loading engine", extra={"model": self.settings.model})
            self.engine = load_engine_from_settings(self.settings)
            self._owns_engine = True
            logger.info("engine ready", extra={"model": self.settings.model})

    async def shutdown(self) -> None:
        if self._owns_engine and isinstance(self.engine, AsyncCloseable):
            await self.engine.aclose()
        self._rankers.clear()

    def resolve_ranker_name(self, ranker: str | None, model: str | None) -> str:
        """The explicit ``ranker``, else ``model`` when it names a ranker, else the default."""
        names = self.ranker_names
        if ranker is not None:
            if ranker not in names:
                raise InvalidInput(f"unknown ranker {ranker!r}; enabled: {', '.join(names)}")
            return ranker
        if model:
            short = model.removeprefix("hoprank-")
            if short in names:
                return short
        return self.settings.resolved_default_ranker

    async def get_ranker(self, name: str) -> Ranker:
        """The cached ranker ``name``, built on first use on the shared engine."""
        if name in self._rankers:
            return self._rankers[name]
        async with self._ranker_lock:
            if name in self._rankers:
                return self._rankers[name]
            if name not in self.settings.rankers:
                raise InvalidInput(f"unknown ranker {name!r}; enabled: {', '.join(self.ranker_names)}")
            if name != "identity" and self.engine is None:
                raise CapabilityMissing(
                    "generate", "none", f"ranker {name!r} needs a model; start the server with --model"
                )
            params = dict(self.settings.ranker_params.get(name, {}))
            try:
                ranker = self._factory(name, engine=self.engine, **params)
            except TypeError as exc:
                raise ConfigError(f"cannot build ranker {name!r}: {exc}") from exc
            self._rankers[name] = ranker
            logger.info("ranker ready", extra={"ranker": name})
            return ranker

    def get_decomposer(self) -> Any:
        """The configured decomposer, or :class:`hoprank.agents.Decomposer` on the engine."""
        if self.decomposer is None:
            if self.engine is None:
                raise CapabilityMissing("generate", "none", "/v1/decompose needs a model (--model)")
            from hoprank.agents.decompose import Decomposer

            self.decomposer = Decomposer(self.engine)
        return self.decomposer

    async def run_limited(
        self,
        work: Callable[[], Awaitable[T]],
        *,
        is_disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> T:
        """Run ``work`` in a concurrency slot under the request timeout, cancelling it
        when the timeout passes or the client goes away.

        Raises :class:`~hoprank.server.limits.Overloaded` at once when every running and
        queued place is taken; :class:`RequestTimeout` when queueing plus running takes
        longer than ``request_timeout_s``; :class:`ClientDisconnected` when
        ``is_disconnected()`` (polled every ``disconnect_poll_s`` while the work runs)
        says the client has gone. Either way the work's task is cancelled, which reaches
        the engine: a model call not started is dropped, a running one stops at its next
        forward pass or token (:mod:`hoprank.llm.runtime.worker`).
        """
        try:
            self.limiter.admit()
        except Overloaded:
            self.metrics.rejected.inc()
            raise
        started: float | None = None

        async def in_slot() -> T:
            nonlocal started
            async with self.limiter.running_slot():
                started = time.monotonic()
                return await work()

        task: asyncio.Task[T] = asyncio.ensure_future(in_slot())
        timeout = self.settings.request_timeout_s
        try:
            reason = await self._wait(task, time.monotonic() + timeout, is_disconnected)
            if reason is None:
                return self._outcome(task)
            task.cancel()
            # cancelling is quick (the engine call is dropped or flagged, not awaited)
            await asyncio.wait({task})
            if not task.cancelled():  # it finished in the meantime: that is its outcome
                return self._outcome(task)
            self._count_cancelled(reason, started)
            if reason == "timeout":
                raise RequestTimeout(timeout)
            raise ClientDisconnected()
        except asyncio.CancelledError:  # this handler itself was cancelled (shutdown)
            if not task.done():
                task.cancel()
                self._count_cancelled("cancelled", started)
            raise
        finally:
            self.limiter.leave()

    async def _wait(
        self,
        task: asyncio.Task[T],
        deadline: float,
        is_disconnected: Callable[[], Awaitable[bool]] | None,
    ) -> str | None:
        """Wait for ``task`` until ``deadline``, polling ``is_disconnected``: None when it
        is done, else why to stop it (``timeout`` or ``disconnect``)."""
        poll = self.disconnect_poll_s if is_disconnected is not None else None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            wait = remaining if poll is None else min(poll, remaining)
            done, _ = await asyncio.wait({task}, timeout=wait)
            if done:
                return None
            if is_disconnected is not None and await is_disconnected():
                return "disconnect"

    def _outcome(self, task: asyncio.Task[T]) -> T:
        exc = task.exception()
        if isinstance(exc, EngineBusy):
            self.metrics.rejected.inc()
        return task.result()

    def _count_cancelled(self, reason: str, started: float | None) -> None:
        self.metrics.cancelled.labels(reason).inc()
        if started is not None:
            self.metrics.abandoned_seconds.inc(time.monotonic() - started)
        logger.info("request cancelled", extra={"reason": reason})
