"""A disk cache of LLM calls, as an engine wrapper: ``CachedEngine(engine, cache_dir)``.

The key of a call is the sha256 of everything that can change its output: the wrapped
engine's ``describe()`` (model, sha256 of the weights, dtype, ...), the method, the
messages, ``prefill``, ``candidates``, ``max_tokens``, ``temperature`` and ``stop``.
Entries are one JSON file per key (``<dir>/<key[:2]>/<key>.json``), written to a
temporary file, fsync'd and moved into place with ``os.replace``, so a crash never
leaves a torn entry and concurrent writers of the same key are harmless. An unreadable
entry counts as a miss and is rewritten.

Hits return the stored value with ``usage.cached_tokens = prompt_tokens`` and
``usage.seconds = 0`` (no compute was spent now); ``hits``/``misses`` count them.
Sampled outputs (``temperature > 0``) are cached too: a rerun replays the first sample.
:func:`count_calls` counts the hits and misses of the calls made inside it (and in the
tasks it starts), so a runner can flag the work units that were replayed from the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from typing_extensions import Unpack

from hoprank._fsio import atomic_write
from hoprank.llm.base import (
    LLM,
    AttentionOptions,
    AttentionRows,
    Completion,
    GenerateOptions,
    LogprobRequest,
    Message,
    TokenLogprobs,
    attention_options,
    generate_options,
)
from hoprank.llm.engines._common import EngineWrapper

__all__ = ["CachedEngine", "CallCounts", "count_calls", "default_cache_dir"]

logger = logging.getLogger(__name__)
V = TypeVar("V", Completion, TokenLogprobs, AttentionRows)
_FORMAT = 1


@dataclass
class CallCounts:
    """Cache hits and misses of the calls made inside one :func:`count_calls` block."""

    hits: int = 0
    misses: int = 0


_COUNTS: ContextVar[CallCounts | None] = ContextVar("hoprank_cache_counts", default=None)


@contextmanager
def count_calls() -> Iterator[CallCounts]:
    """Count the :class:`CachedEngine` hits and misses of the calls made in this block,
    including those of tasks started inside it (they inherit the context)."""
    counts = CallCounts()
    token = _COUNTS.set(counts)
    try:
        yield counts
    finally:
        _COUNTS.reset(token)


def default_cache_dir() -> Path:
    """``$HOPRANK_CACHE/llm-calls`` (default ``~/.cache/hoprank/llm-calls``)."""
    root = os.environ.get("HOPRANK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hoprank")
    return Path(root) / "llm-calls"


def _engine_identity(engine: Any) -> dict[str, Any]:
    desc = dict(engine.describe())
    # A local path does not change outputs when the weights are pinned by a hash.
    if any("sha256" in k and v for k, v in desc.items()):
        desc.pop("path", None)
    return desc


class CachedEngine(EngineWrapper):
    """An :class:`~hoprank.llm.base.LLM` that answers repeated calls from disk.

    It declares the wrapped engine's capabilities and implements their protocols
    explicitly: ``render`` (not cached: it is local and cheap), ``attention_rows`` (cached)
    and ``attention_window`` delegate to the wrapped engine, or raise
    :class:`~hoprank.errors.CapabilityMissing` when it lacks them. Anything else of the
    wrapped engine is reached through :attr:`inner`.
    """

    attention_hint = "ICR needs an in-process transformers engine"

    def __init__(self, engine: LLM, cache_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(engine)
        self.inner = engine
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._identity = _engine_identity(engine)
        self.hits = 0
        self.misses = 0

    @property
    def wrapped_engine(self) -> LLM:
        return self.inner

    def stats(self) -> dict[str, Any]:
        return {"dir": str(self.cache_dir), "hits": self.hits, "misses": self.misses}

    # ------------------------------------------------------------------ storage
    def key(self, method: str, **request: Any) -> str:
        """The cache key of one call (hex sha256)."""
        material = {"format": _FORMAT, "engine": self._identity, "method": method, **request}
        blob = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _load(self, key: str, model: type[V]) -> V | None:
        path = self._path(key)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            return model.model_validate(data["value"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("ignoring unreadable cache entry %s: %s", path, e)
            return None

    def _store(self, key: str, method: str, value: BaseModel) -> None:
        """Write an entry atomically. A cache that cannot be written (disk full, a folder
        or unwritable file in the way) is logged and skipped: the result stands."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as f:
                json.dump({"format": _FORMAT, "method": method, "value": value.model_dump(mode="json")}, f)
        except OSError as e:
            logger.warning("could not write cache entry %s: %s", path, e)

    def _count(self, hits: int, misses: int) -> None:
        self.hits += hits
        self.misses += misses
        counts = _COUNTS.get()
        if counts is not None:
            counts.hits += hits
            counts.misses += misses

    def _hit(self, key: str, model: type[V]) -> V | None:
        """The stored value of ``key`` as a hit (``usage.cached_tokens = prompt_tokens``,
        ``usage.seconds = 0``: no compute was spent now), or None."""
        hit = self._load(key, model)
        if hit is None:
            return None
        usage = hit.usage.model_copy(update={"cached_tokens": hit.usage.prompt_tokens, "seconds": 0.0})
        return hit.model_copy(update={"usage": usage})

    async def _cached(self, key: str, method: str, model: type[V], compute: Callable[[], Awaitable[V]]) -> V:
        """The stored value of ``key``, else ``compute()`` stored under it; counted."""
        hit = self._hit(key, model)
        if hit is not None:
            self._count(1, 0)
            return hit
        self._count(0, 1)
        out = await compute()
        self._store(key, method, out)
        return out

    # ------------------------------------------------------------------ cached calls
    async def generate(
        self, messages: Sequence[Message], *, max_tokens: int, **options: Unpack[GenerateOptions]
    ) -> Completion:
        temperature, stop, prefill = generate_options(options)
        key = self.key(
            "generate",
            messages=list(messages),
            max_tokens=max_tokens,
            temperature=temperature,
            stop=list(stop) if stop is not None else None,
            prefill=prefill,
        )
        return await self._cached(
            key,
            "generate",
            Completion,
            lambda: self.inner.generate(messages, max_tokens=max_tokens, **options),
        )

    def _logprob_key(self, messages: Sequence[Message], candidates: Sequence[str], prefill: str) -> str:
        return self.key(
            "next_token_logprobs", messages=list(messages), candidates=list(candidates), prefill=prefill
        )

    async def next_token_logprobs(
        self, messages: Sequence[Message], *, candidates: Sequence[str], prefill: str = ""
    ) -> TokenLogprobs:
        return await self._cached(
            self._logprob_key(messages, candidates, prefill),
            "next_token_logprobs",
            TokenLogprobs,
            lambda: self.inner.next_token_logprobs(messages, candidates=candidates, prefill=prefill),
        )

    async def next_token_logprobs_batch(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        """Answers hits from disk and sends only the misses, as one batch, to the engine."""
        keys = [self._logprob_key(r.messages, r.candidates, r.prefill) for r in requests]
        results: list[TokenLogprobs | None] = [self._hit(k, TokenLogprobs) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        self._count(len(requests) - len(todo), len(todo))
        if todo:
            fresh = await self.inner.next_token_logprobs_batch([requests[i] for i in todo])
            for i, out in zip(todo, fresh, strict=True):
                self._store(keys[i], "next_token_logprobs", out)
                results[i] = out
        return [r for r in results if r is not None]

    async def attention_rows(
        self, prefix: str, suffixes: Sequence[str], **options: Unpack[AttentionOptions]
    ) -> AttentionRows:
        """Cached attention rows (engines with the ATTENTION capability). ``per_head``
        calls are not cached (their per-head arrays are not serialised)."""
        layers, heads, per_head = attention_options(options)
        if per_head:
            self._count(0, 1)
            return await self._wrapped_attention_rows(prefix, suffixes, layers, heads, per_head)
        extra: dict[str, Any] = {} if heads is None else {"heads": [list(h) for h in heads]}
        key = self.key(
            "attention_rows",
            prefix=prefix,
            suffixes=list(suffixes),
            layers=list(layers) if layers is not None else None,
            **extra,
        )
        return await self._cached(
            key,
            "attention_rows",
            AttentionRows,
            lambda: self._wrapped_attention_rows(prefix, suffixes, layers, heads, per_head),
        )

    def __repr__(self) -> str:
        return f"CachedEngine({self.inner!r}, {str(self.cache_dir)!r})"
