"""The hybrid retriever: several retrievers fused by reciprocal rank fusion.

The fusion itself, :func:`hoprank.runs.rrf_fuse`, lives with the other ranked-list
helpers in :mod:`hoprank.runs`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hoprank.errors import InvalidInput
from hoprank.runs import check_weights, rrf_fuse
from hoprank.tools.base import Retriever
from hoprank.tools.retriever import BaseRetriever
from hoprank.types import Document

__all__ = ["HybridRetriever"]


class HybridRetriever(BaseRetriever):
    """Runs several retrievers concurrently and fuses their results with :func:`rrf_fuse`.

    Each retriever is asked for ``max(k, depth)`` documents (``depth`` defaults to 50), the
    lists are fused (``rrf_k = 60``, optional per-retriever ``weights``), and the top
    ``k`` fused documents are returned. ``metadata["rrf_ranks"]`` maps each result to
    its rank in every retriever's list (by retriever name).
    """

    name = "hybrid_search"
    description = (
        "Hybrid search over the document collection: keyword (BM25) and semantic results "
        "fused by reciprocal rank. Returns the k most relevant passages."
    )

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        *,
        weights: Sequence[float] | None = None,
        rrf_k: int = 60,
        depth: int | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        if not retrievers:
            raise InvalidInput("HybridRetriever needs at least one retriever")
        if depth is not None and depth < 1:
            raise InvalidInput(f"depth must be >= 1, got {depth}")
        self.retrievers = list(retrievers)
        self.weights = check_weights(weights, len(self.retrievers))
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 0:
            raise InvalidInput(f"rrf_k must be an integer >= 0, got {rrf_k!r}")
        self.rrf_k = rrf_k
        self.depth = depth
        if name:
            self.name = name
        if description:
            self.description = description

    @property
    def corpus_size(self) -> int | None:
        """The largest component's size when all are known (same corpus: its size)."""
        sizes = [getattr(r, "corpus_size", None) for r in self.retrievers]
        known = [s for s in sizes if isinstance(s, int)]
        return max(known) if known and len(known) == len(sizes) else None

    def _fuse(self, lists: Sequence[Sequence[Document]], k: int) -> list[Document]:
        fused = rrf_fuse(lists, k=self.rrf_k, weights=self.weights)[:k]
        names = [getattr(r, "name", str(i)) for i, r in enumerate(self.retrievers)]
        return [
            d.with_score(d.score, rrf_ranks=dict(zip(names, d.metadata["rrf_ranks"], strict=True)))
            for d in fused
        ]

    async def _search(self, query: str, k: int) -> list[Document]:
        depth = max(k, self.depth or 50)
        lists = await asyncio.gather(*(r.search(query, depth) for r in self.retrievers))
        return self._fuse(lists, k)

    async def _search_batch(self, queries: list[str], k: int) -> list[list[Document]]:
        depth = max(k, self.depth or 50)
        per_retriever = await asyncio.gather(*(r.search_many(queries, depth) for r in self.retrievers))
        return [self._fuse([lists[qi] for lists in per_retriever], k) for qi in range(len(queries))]
