"""Reuse of the KV cache of a prompt's shared beginning across ``generate`` calls.

An agent step, a decomposition or an answer prompt starts with the same system message
and few-shot examples every time (about 550 tokens of the agent's 1,100–1,400), and the
steps of one question also share the question line. Without reuse, every call prefills
all of them again: on 2 CPU cores that is about half of an agent step's seconds.

:class:`PrefixCache` keeps the KV caches of the last ``capacity`` generations (prompt and
generated tokens). A new prompt takes a copy of the cache with the longest common token
prefix, cropped to that prefix (always leaving the prompt's last token to compute), and
``generate`` prefills only the rest. Greedy outputs are those of a full prefill up to
float rounding (the cached keys and values were computed in another call's shapes);
``tests/test_prefix_cache.py`` checks equal texts on a real model.

Imports no torch: the caches are the model's own objects (``DynamicCache``), handled by
their ``crop`` and ``get_seq_length`` methods.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PrefixCache", "common_prefix"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The number of leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class _Entry:
    ids: tuple[int, ...]
    cache: Any


class PrefixCache:
    """The KV caches of the last ``capacity`` generations, looked up by token prefix.

    ``min_tokens``: a shorter common prefix is not worth a copy (a chat template's first
    line is shared by every prompt). Thread-safe; the counters ``hits``, ``misses`` and
    ``reused_tokens`` say what it saved.
    """

    def __init__(self, capacity: int = 4, *, min_tokens: int = 32) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self.min_tokens = max(1, min_tokens)
        self._entries: list[_Entry] = []  # least recently used first
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, ids: Sequence[int]) -> tuple[Any | None, int]:
        """``(cache, n)``: a private copy of the best cache cropped to its first ``n`` tokens
        (``n < len(ids)``), or ``(None, 0)`` when no entry shares ``min_tokens`` tokens."""
        if self.capacity == 0 or len(ids) < 2:
            return None, 0
        with self._lock:
            best, n = None, 0
            for e in self._entries:
                k = common_prefix(e.ids, ids)
                if k > n:
                    best, n = e, k
            n = min(n, len(ids) - 1)
            if best is None or n < self.min_tokens:
                self.misses += 1
                return None, 0
            self._entries.remove(best)
            self._entries.append(best)
            cache = copy.deepcopy(best.cache)
            self.hits += 1
            self.reused_tokens += n
        surplus = int(cache.get_seq_length()) - n
        if surplus > 0:
            cache.crop(-surplus)  # a negative count removes tokens, in every transformers version
        return cache, n

    def store(self, ids: Sequence[int], cache: Any) -> None:
        """Keep ``cache`` (it must not be used elsewhere afterwards) for the tokens ``ids``
        it covers (cut to the cache's length); entries it extends are dropped."""
        if self.capacity == 0 or cache is None:
            return
        key = tuple(ids[: int(cache.get_seq_length())])
        if len(key) < self.min_tokens:
            return
        with self._lock:
            self._entries = [e for e in self._entries if common_prefix(e.ids, key) < len(e.ids)]
            self._entries.append(_Entry(key, cache))
            del self._entries[: max(0, len(self._entries) - self.capacity)]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
