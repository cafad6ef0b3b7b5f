"""Reciprocal rank fusion (RRF) and the hybrid retriever built on it.

RRF (Cormack, Clarke & Büttcher, 2009) scores a document by
``sum_i w_i / (k + rank_i(d))`` over the rankings that contain it, with 1-based ranks
and ``k = 60``. It needs no score calibration, which is why it fuses BM25 with dense
retrieval, and per-sub-question result lists in the agent pipeline, equally well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hoprank.errors import InvalidInput
from hoprank.tools.base import Retriever
from hoprank.tools.retriever import BaseRetriever
from hoprank.types import Document

__all__ = ["HybridRetriever", "rrf_fuse"]


def _check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise InvalidInput(f"got {len(w)} weights for {n} rankings")
    if any(x < 0 for x in w):
        raise InvalidInput(f"RRF weights must be >= 0, got {w}")
    return w


def rrf_fuse(
    rankings: Sequence[Sequence[Document]],
    k: int = 60,
    weights: Sequence[float] | None = None,
) -> list[Document]:
    """Fuse best-first rankings by reciprocal rank fusion; dedupe by document id.

    A document's rank in a list is its 1-based position (a repeat within one list
    counts only at its first position). The fused score is
    ``sum_i weights[i] / (k + rank_i)``. Output documents are the first-seen copy of
    each id with ``score`` set to the fused score, ``metadata["rank"]`` (1-based) and
    ``metadata["rrf_ranks"]``: its rank in each input list (``None`` where absent).
    Ties keep first-seen order (by list, then position), so the result is deterministic.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InvalidInput(f"RRF k must be an integer >= 0, got {k!r}")
    w = _check_weights(weights, len(rankings))
    scores: dict[str, float] = {}
    first: dict[str, Document] = {}
    ranks: dict[str, list[int | None]] = {}
    for li, ranking in enumerate(rankings):
        seen: set[str] = set()
        for pos, doc in enumerate(ranking, start=1):
            if doc.id in seen:
                continue
            seen.add(doc.id)
            if doc.id not in first:
                first[doc.id] = doc
                scores[doc.id] = 0.0
                ranks[doc.id] = [None] * len(rankings)
            scores[doc.id] += w[li] / (k + pos)
            ranks[doc.id][li] = pos
    order = sorted(first, key=lambda i: -scores[i])  # sorted() is stable: ties keep first-seen order
    return [first[i].with_score(scores[i], rank=r, rrf_ranks=ranks[i]) for r, i in enumerate(order, start=1)]


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
        self.weights = _check_weights(weights, len(self.retrievers))
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
