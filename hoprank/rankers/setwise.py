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
from typing import Any, ClassVar, Self

from pydantic import model_validator

from hoprank.errors import ConfigError
from hoprank.llm.base import LLM
from hoprank.rankers.base import RankerOutput, RankerSpec
from hoprank.rankers.config import WindowedConfig
from hoprank.rankers.first import FIRST, FIRSTConfig
from hoprank.rankers.window import WindowSpan
from hoprank.types import Document, Step, Usage

__all__ = ["Setwise", "SetwiseConfig"]

METHODS = ("heapsort", "bubblesort")


class SetwiseConfig(FIRSTConfig):
    """Setwise's parameters: ``num_child`` (a comparison shows ``num_child + 1`` passages;
    the window is derived from it), ``method`` and ``k``, plus FIRST's label options
    (``calibrate``, ``shifts`` rotations of each set, ``prefill``, ``label_tokens``) and
    passage budget."""

    num_child: int = 3
    method: str = "heapsort"
    k: int = 10

    @model_validator(mode="before")
    @classmethod
    def _derive_window(cls, data: Any) -> Any:
        if isinstance(data, dict):
            n = data.get("num_child", 3)
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 25:
                raise ConfigError(f"num_child must be an integer in 1..25, got {n!r}")
            if data.get("window") not in (None, n + 1):
                raise ConfigError(f"setwise derives window = num_child + 1 = {n + 1}; do not set window")
            data = {**data, "window": n + 1, "step": None}
        return data

    @model_validator(mode="after")
    def _check_setwise(self) -> Self:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        return self


class Setwise(FIRST):
    """Setwise heapsort / bubble sort over label log-probabilities.

    ``params``: the fields of :class:`SetwiseConfig` — ``num_child`` (default 3; the
    paper's c = 2..4), ``method`` (``"heapsort"`` or ``"bubblesort"``), ``k`` (top
    positions to sort, default 10; a call's ``top_k`` overrides), ``max_passage_tokens``,
    ``calibrate``, ``shifts``, ``neutralize``, ``prefill``, ``label_tokens`` (as FIRST).
    """

    name = "setwise"
    default_prompt = "setwise"
    config_class: ClassVar[type[WindowedConfig]] = SetwiseConfig
    config: SetwiseConfig

    def __init__(self, engine: LLM, *, config: SetwiseConfig | None = None, **params: Any) -> None:
        super().__init__(engine, config=config, **params)
        self.num_child = self.config.num_child
        self.method = self.config.method
        self.k = self.config.k

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


#: what the registry lists (hoprank.rankers.registry finds it)
RANKER_SPECS = (
    RankerSpec(
        "setwise",
        "setwise heapsort / bubble sort over label logits",
        lambda: Setwise,
        default_prompt="setwise",
        served=False,
        order=40,
    ),
)
