"""Setwise ranking (Zhuang et al., SIGIR 2024): sorting by "which of these is best?".

Each comparison shows a small set of passages (a parent and its ``num_child`` children in
a heap, or a window of ``num_child + 1`` in bubble sort) and reads the next-token
log-probabilities of their labels, exactly as :class:`~hoprank.rankers.first.FIRST` reads
a window (same label forms, prefill, calibration; one forward, nothing generated); the
passage with the highest label probability wins. Only the winner is used, which is what
small models do reliably: the paper reports setwise heapsort near pointwise quality at a
fraction of a listwise ranker's calls.

``method="heapsort"`` (default) builds a ``num_child``-ary max-heap over the first-stage
order and pops the top ``k``; ``"bubblesort"`` runs ``k`` bottom-up passes of
overlapping sets. The first ``k`` positions are fully sorted; the rest follow in their
first-stage order. Identical comparisons within a query are asked once. Scores are
rank-based (``n - position``); the winner probabilities are in the trace.

Works on every engine with token log-probabilities (transformers, vLLM, OpenAI-compatible
servers that return ``top_logprobs``); usage counts every call and token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hoprank.errors import ConfigError
from hoprank.llm.base import LLM
from hoprank.prompts import PromptLike
from hoprank.rankers.base import RankerOutput
from hoprank.rankers.first import FIRST
from hoprank.rankers.window import WindowSpan
from hoprank.types import Document, Step, Usage

__all__ = ["Setwise"]

METHODS = ("heapsort", "bubblesort")


class Setwise(FIRST):
    """Setwise heapsort / bubble sort over label log-probabilities.

    Args:
        engine: an engine with TOKEN_LOGPROBS.
        prompt: prompt name, path or template (default ``setwise``).
        num_child: children per heap node (a comparison shows ``num_child + 1`` passages;
            the paper's c = 2..4; default 3).
        method: ``"heapsort"`` or ``"bubblesort"``.
        k: how many top positions to sort (default 10; ``top_k`` of a call overrides).
        max_passage_tokens, calibrate, neutralize, prefill, label_tokens: as for FIRST.
    """

    name = "setwise"
    default_prompt = "setwise"

    def __init__(
        self,
        engine: LLM,
        *,
        prompt: PromptLike | None = None,
        num_child: int = 3,
        method: str = "heapsort",
        k: int = 10,
        max_passage_tokens: int = 100,
        calibrate: bool = False,
        neutralize: bool = True,
        prefill: str | None = None,
        label_tokens: str = "auto",
    ) -> None:
        if not 1 <= num_child <= 25:
            raise ConfigError(f"num_child must be in 1..25, got {num_child}")
        if method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        super().__init__(
            engine,
            prompt=prompt,
            window=num_child + 1,
            max_passage_tokens=max_passage_tokens,
            calibrate=calibrate,
            neutralize=neutralize,
            prefill=prefill,
            label_tokens=label_tokens,
        )
        self.num_child = num_child
        self.method = method
        self.k = k

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        run = _Run(self, query, docs)
        k = min(len(docs), top_k or self.k)
        if self.method == "heapsort":
            top = await run.heapsort(k)
        else:
            top = await run.bubblesort(k)
        chosen = set(top)
        order = top + [i for i in range(len(docs)) if i not in chosen]
        n = len(order)
        ranked = [docs[i].with_score(float(n - pos)) for pos, i in enumerate(order)]
        return RankerOutput(ranked, run.usage, run.trace)

    def describe(self) -> dict[str, Any]:
        return {
            "ranker": self.name,
            "prompt": self.prompt.ref,
            "num_child": self.num_child,
            "method": self.method,
            "k": self.k,
            "max_passage_tokens": self.max_passage_tokens,
            "calibrate": self.calibrate,
            "label_tokens": self.label_tokens,
        }


class _Run:
    """One query's sort: the comparisons asked so far, their usage and trace."""

    def __init__(self, ranker: Setwise, query: str, docs: list[Document]) -> None:
        self.ranker = ranker
        self.query = query
        self.docs = docs
        self.usage = Usage()
        self.trace: list[Step] = []
        self.memo: dict[tuple[int, ...], int] = {}

    async def best(self, indices: Sequence[int]) -> int:
        """The document index that wins the comparison of ``indices`` (shown in that order)."""
        key = tuple(indices)
        if len(key) == 1:
            return key[0]
        if key in self.memo:
            return self.memo[key]
        span = WindowSpan(start=0, end=len(key), index=len(self.trace))
        order, step = await self.ranker._rank_window(self.query, [self.docs[i] for i in key], span)
        step.kind = "setwise"
        step.input["compared"] = [self.docs[i].id for i in key]
        step.output["winner"] = self.docs[key[order[0]]].id
        self.trace.append(step)
        self.usage = self.usage + step.usage
        self.memo[key] = key[order[0]]
        return key[order[0]]

    async def heapsort(self, k: int) -> list[int]:
        c = self.ranker.num_child
        heap = list(range(len(self.docs)))

        async def sift(size: int, i: int) -> None:
            while True:
                kids = list(range(c * i + 1, min(c * i + c + 1, size)))
                if not kids:
                    return
                winner = await self.best([heap[i]] + [heap[j] for j in kids])
                if winner == heap[i]:
                    return
                j = heap.index(winner)
                heap[i], heap[j] = heap[j], heap[i]
                i = j

        n = len(heap)
        for i in range((n - 2) // c, -1, -1):
            await sift(n, i)
        top: list[int] = []
        for end in range(n - 1, n - 1 - k, -1):
            top.append(heap[0])
            if len(top) == k:
                break
            heap[0], heap[end] = heap[end], heap[0]
            await sift(end, 0)
        return top

    async def bubblesort(self, k: int) -> list[int]:
        size = self.ranker.num_child + 1
        arr = list(range(len(self.docs)))
        for p in range(min(k, len(arr) - 1)):
            end = len(arr)
            while end - p > 1:
                start = max(p, end - size)
                winner = await self.best(arr[start:end])
                j = arr.index(winner)
                arr[start], arr[j] = arr[j], arr[start]
                if start == p:
                    break
                end = start + 1
        return arr[:k]
