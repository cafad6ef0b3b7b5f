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
from collections.abc import Iterator, Sequence
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
    Capability,
    Completion,
    ForwardedCapabilities,
    GenerateOptions,
    LogprobRequest,
    Message,
    Tokenizer,
    TokenLogprobs,
    attention_engine,
    attention_options,
    generate_options,
)
from hoprank.types import Usage

__all__ = ["CachedEngine", "CallCounts", "count_calls", "default_cache_dir"]

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
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


class CachedEngine(ForwardedCapabilities):
    """An :class:`~hoprank.llm.base.LLM` that answers repeated calls from disk.

    It declares the wrapped engine's capabilities and implements their protocols
    explicitly: ``render`` (not cached: it is local and cheap), ``attention_rows`` (cached)
    and ``attention_window`` delegate to the wrapped engine, or raise
    :class:`~hoprank.errors.CapabilityMissing` when it lacks them. Anything else of the
    wrapped engine is reached through :attr:`inner`.
    """

    attention_hint = "ICR needs an in-process transformers engine"

    def __init__(self, engine: LLM, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.inner = engine
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._identity = _engine_identity(engine)
        self.name: str = engine.name
        self.capabilities: frozenset[Capability] = engine.capabilities
        self.tokenizer: Tokenizer = engine.tokenizer
        self.context_window: int = engine.context_window
        self.hits = 0
        self.misses = 0

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

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

    def _load(self, key: str, model: type[M]) -> M | None:
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

    @staticmethod
    def _as_hit(usage: Usage) -> Usage:
        return usage.model_copy(update={"cached_tokens": usage.prompt_tokens, "seconds": 0.0})

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
        hit = self._load(key, Completion)
        if hit is not None:
            self._count(1, 0)
            return hit.model_copy(update={"usage": self._as_hit(hit.usage)})
        self._count(0, 1)
        out = await self.inner.generate(messages, max_tokens=max_tokens, **options)
        self._store(key, "generate", out)
        return out

    def _logprob_key(self, messages: Sequence[Message], candidates: Sequence[str], prefill: str) -> str:
        return self.key(
            "next_token_logprobs", messages=list(messages), candidates=list(candidates), prefill=prefill
        )

    async def next_token_logprobs(
        self, messages: Sequence[Message], *, candidates: Sequence[str], prefill: str = ""
    ) -> TokenLogprobs:
        key = self._logprob_key(messages, candidates, prefill)
        hit = self._load(key, TokenLogprobs)
        if hit is not None:
            self._count(1, 0)
            return hit.model_copy(update={"usage": self._as_hit(hit.usage)})
        self._count(0, 1)
        out = await self.inner.next_token_logprobs(messages, candidates=candidates, prefill=prefill)
        self._store(key, "next_token_logprobs", out)
        return out

    async def next_token_logprobs_batch(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        """Answers hits from disk and sends only the misses, as one batch, to the engine."""
        keys = [self._logprob_key(r.messages, r.candidates, r.prefill) for r in requests]
        results: list[TokenLogprobs | None] = []
        for k in keys:
            hit = self._load(k, TokenLogprobs)
            results.append(hit.model_copy(update={"usage": self._as_hit(hit.usage)}) if hit else None)
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
        fn = attention_engine(self.inner, self.attention_hint).attention_rows
        if per_head:
            self._count(0, 1)
            fresh: AttentionRows = await fn(prefix, suffixes, layers=layers, heads=heads, per_head=True)
            return fresh
        extra: dict[str, Any] = {} if heads is None else {"heads": [list(h) for h in heads]}
        key = self.key(
            "attention_rows",
            prefix=prefix,
            suffixes=list(suffixes),
            layers=list(layers) if layers is not None else None,
            **extra,
        )
        hit = self._load(key, AttentionRows)
        if hit is not None:
            self._count(1, 0)
            return hit.model_copy(update={"usage": self._as_hit(hit.usage)})
        self._count(0, 1)
        out: AttentionRows = await (
            fn(prefix, suffixes, layers=layers)
            if heads is None
            else fn(prefix, suffixes, layers=layers, heads=heads)
        )
        self._store(key, "attention_rows", out)
        return out

    def __repr__(self) -> str:
        return f"CachedEngine({self.inner!r}, {str(self.cache_dir)!r})"
