"""The one retry layer around network calls (built on ``tenacity``).

:func:`retry_async` runs an attempt function under a :class:`RetryPolicy`: it retries only
failures that may succeed on a second try (429, 408, 409, 5xx, timeouts, connection
errors, a truncated response body), never a request the server rejected (400, 401, 403,
404, 422, context overflow). Between attempts it waits a jittered exponential backoff,
or exactly the server's ``Retry-After`` hint on a 429. No attempt starts after the total
budget is spent: when the next wait would cross it (say ``Retry-After: 120`` with 10 s
of budget left) it gives up at once. When attempts or budget run out, the *last typed
error* is raised (never tenacity's ``RetryError``), with ``attempts`` set on it.

:func:`to_engine_error` maps openai / httpx / httpx2 exceptions to the
:mod:`hoprank.errors` tree; other exceptions (programming errors) pass through untouched
and are not retried.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NoReturn, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay

from hoprank.errors import ConfigError, ContextOverflow, EngineError, EngineTimeout, HoprankError, RateLimited

__all__ = [
    "AttemptRecord",
    "RetryPolicy",
    "RetryStats",
    "error_from_status",
    "parse_retry_after",
    "retry_async",
    "to_engine_error",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_RETRYABLE_STATUS = frozenset({408, 409, 425})
_OVERFLOW_MARKERS = (
    "context_length_exceeded",
    "exceed_context_size",
    "maximum context length",
    "context length",
    "context window",
    "available context size",
    "prompt is too long",
    "too many tokens",
)
_MAX_SNIPPET = 500


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    ``max_attempts`` counts the first try; waits grow ``initial * 2**(n-1)`` up to
    ``max_wait`` (with ``jitter`` a wait is drawn from [w/2, w]); ``total_budget_s`` bounds
    the whole call including waits (each attempt's timeout is also cut to what is left).

    The defaults ride out a server restart of ~10 s: six retries after waits of 0.5, 1, 2,
    4, 8 and 8 s (halved at worst by jitter: at least ~12 s, at most ~24 s, before giving
    up on a dead server; 4 attempts gave up after ~3 s).
    """

    max_attempts: int = 7
    initial: float = 0.5
    max_wait: float = 8.0
    total_budget_s: float = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial < 0 or self.max_wait < 0:
            raise ConfigError("RetryPolicy waits must be >= 0")
        if self.total_budget_s <= 0:
            raise ConfigError(f"RetryPolicy.total_budget_s must be > 0, got {self.total_budget_s}")

    @classmethod
    def no_retry(cls, total_budget_s: float = 60.0) -> RetryPolicy:
        """A single attempt."""
        return cls(max_attempts=1, total_budget_s=total_budget_s)

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The wait before retry ``retry_number`` (1 = the first retry)."""
        base = min(self.max_wait, self.initial * (2.0 ** max(0, retry_number - 1)))
        if not self.jitter or base <= 0:
            return base
        return base / 2 + (rng or random).uniform(0.0, base / 2)


@dataclass
class AttemptRecord:
    """One attempt: when it started (seconds after the first), how long it took, and
    the typed error it ended with (``None`` for success); ``waited`` is the sleep after it."""

    attempt: int
    started: float
    seconds: float
    error: str | None = None
    status_code: int | None = None
    waited: float = 0.0


@dataclass
class RetryStats:
    """Attempts of one retried call (filled in place, also when the call fails)."""

    attempts: list[AttemptRecord] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.attempts)

    @property
    def retries(self) -> int:
        return max(0, len(self.attempts) - 1)

    @property
    def waited(self) -> float:
        return sum(a.waited for a in self.attempts)


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or HTTP-date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return max(0.0, (when - current).total_seconds())


def _snippet(body: object) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text if len(text) <= _MAX_SNIPPET else text[:_MAX_SNIPPET] + "…"


def _overflow(status: int, text: str, body: object, what: str) -> ContextOverflow | None:
    lowered = text.lower()
    if status not in (400, 413, 422) or not any(m in lowered for m in _OVERFLOW_MARKERS):
        return None
    prompt_tokens = context_window = None
    err = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(err, dict):  # llama.cpp: n_prompt_tokens / n_ctx (openai unwraps "error")
        if isinstance(err.get("n_prompt_tokens"), int):
            prompt_tokens = err["n_prompt_tokens"]
        if isinstance(err.get("n_ctx"), int):
            context_window = err["n_ctx"]
    if context_window is None and (
        m := re.search(r"(?:maximum context length is|context size \() ?(\d+)", text)
    ):
        context_window = int(m.group(1))
    if prompt_tokens is None and (
        m := re.search(r"(?:requested|resulted in|request \() ?(\d+) tokens", text)
    ):
        prompt_tokens = int(m.group(1))
    return ContextOverflow(
        f"{what}: HTTP {status}: context length exceeded: {_snippet(text)}",
        prompt_tokens=prompt_tokens,
        context_window=context_window,
    )


def error_from_status(
    status: int, *, headers: Mapping[str, str] | None = None, body: object = None, what: str = "request"
) -> EngineError:
    """The typed error for an HTTP error status (``body``: parsed JSON or text)."""
    text = _snippet(body) if body is not None else ""
    if status == 429:
        hint = parse_retry_after(headers)
        return RateLimited(f"{what}: HTTP 429 rate limited: {text}", retry_after=hint)
    overflow = _overflow(status, text, body, what)
    if overflow is not None:
        return overflow
    retryable = status in _RETRYABLE_STATUS or status >= 500
    return EngineError(f"{what}: HTTP {status}: {text}", retryable=retryable, status_code=status)


def to_engine_error(exc: BaseException, *, what: str = "request") -> HoprankError | None:
    """Map a client exception to the typed tree; ``None`` when it is not a network failure."""
    if isinstance(exc, HoprankError):
        return exc
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return EngineTimeout(f"{what}: timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return EngineError(f"{what}: connection error{detail}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        body: object = exc.body
        if body is None or isinstance(body, str):
            try:
                body = exc.response.text or exc.message
            except Exception:  # a streamed body that was never read
                body = exc.message
        return error_from_status(exc.status_code, headers=exc.response.headers, body=body, what=what)
    if isinstance(exc, openai.APIResponseValidationError):
        return EngineError(
            f"{what}: response does not match the API schema: {exc.message}",
            retryable=False,
            status_code=exc.status_code,
        )
    if isinstance(exc, json.JSONDecodeError):  # a 200 whose body was cut off
        return EngineError(f"{what}: malformed JSON in the response: {exc}", retryable=True)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return EngineTimeout(f"{what}: timed out")
    for mod_name in ("httpx", "httpx2"):
        mapped = _from_httpx(exc, mod_name, what)
        if mapped is not None:
            return mapped
    if isinstance(exc, ConnectionError):
        return EngineError(f"{what}: connection error ({exc})", retryable=True)
    return None


def _from_httpx(exc: BaseException, mod_name: str, what: str) -> HoprankError | None:
    import sys

    mod: Any = sys.modules.get(mod_name)
    if mod is None:  # never imported, so it cannot have raised
        return None
    if isinstance(exc, mod.TimeoutException):
        return EngineTimeout(f"{what}: timed out")
    if isinstance(exc, mod.TransportError):
        return EngineError(f"{what}: transport error ({type(exc).__name__}: {exc})", retryable=True)
    if isinstance(exc, mod.HTTPStatusError):
        resp = exc.response
        return error_from_status(resp.status_code, headers=resp.headers, body=resp.text, what=what)
    return None


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, EngineError) and exc.retryable


def _wait_for(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return exc.retry_after
        return policy.backoff(state.attempt_number)

    return wait


def _raise_typed(
    exc: BaseException, record: AttemptRecord, *, what: str, redact: Callable[[str], str] | None
) -> NoReturn:
    """Raise ``exc`` as its typed engine error (redacted), noting the failure in ``record``;
    an exception with no engine meaning is raised as it is."""
    typed = to_engine_error(exc, what=what)
    if typed is None:
        record.error = type(exc).__name__
        raise exc
    raw = str(typed)
    if redact is not None and (clean := redact(raw)) != raw:
        typed.args = (clean,)
    record.error = type(typed).__name__
    record.status_code = getattr(typed, "status_code", None)
    if typed is exc:
        raise exc
    # drop the raw cause when it carried something that had to be redacted
    leaked = redact is not None and redact(str(exc)) != str(exc)
    raise typed from (None if leaked else exc)


async def retry_async(
    fn: Callable[[float], Awaitable[T]],
    policy: RetryPolicy,
    *,
    stats: RetryStats | None = None,
    what: str = "request",
    redact: Callable[[str], str] | None = None,
) -> T:
    """Run ``fn(remaining_budget_s)`` until it succeeds or the policy gives up.

    Exceptions from ``fn`` are mapped with :func:`to_engine_error`; retryable typed errors
    are retried, others raised at once. ``redact`` scrubs secrets from error messages.
    """
    stats = stats if stats is not None else RetryStats()
    start = time.monotonic()

    def before_sleep(state: RetryCallState) -> None:
        if stats.attempts:
            stats.attempts[-1].waited = state.upcoming_sleep
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.info(
            "%s: attempt %d failed (%s); retrying in %.2f s",
            what,
            state.attempt_number,
            type(exc).__name__ if exc is not None else "?",
            state.upcoming_sleep,
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts) | stop_before_delay(policy.total_budget_s),
        wait=_wait_for(policy),
        retry=retry_if_exception(_is_retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                t0 = time.monotonic()
                record = AttemptRecord(attempt=len(stats.attempts) + 1, started=t0 - start, seconds=0.0)
                stats.attempts.append(record)
                try:
                    return await fn(max(0.0, policy.total_budget_s - (t0 - start)))
                except BaseException as exc:
                    _raise_typed(exc, record, what=what, redact=redact)
                finally:
                    record.seconds = time.monotonic() - t0
    except HoprankError as err:
        err.attempts = stats.count  # type: ignore[attr-defined]
        if stats.count > 1 or (isinstance(err, EngineError) and err.retryable):
            logger.warning("%s: giving up after %d attempt(s): %s", what, stats.count, err)
        raise
    raise AssertionError("unreachable: tenacity ended without outcome")  # pragma: no cover
