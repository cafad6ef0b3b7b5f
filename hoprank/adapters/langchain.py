"""A LangChain document compressor that reranks with any hoprank ranker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hoprank.adapters.scoring import relevance_scores
from hoprank.errors import MissingExtra
from hoprank.rankers.base import Ranker
from hoprank.types import Document, Ranking

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor
    from langchain_core.documents import Document as LCDocument
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtra("adapters", "langchain-core") from exc

from pydantic import ConfigDict

__all__ = ["HoprankDocumentCompressor"]


class HoprankDocumentCompressor(BaseDocumentCompressor):
    """Rerank LangChain documents with a hoprank ranker and keep the best ``top_n``.

    Each returned document is a copy of the input with its metadata kept and
    ``metadata[score_key]`` set to the relevance score (in [0, 1], non-increasing with
    rank; see :func:`hoprank.adapters.scoring.relevance_scores`), plus
    ``metadata["rerank_rank"]`` (1-based) and ``metadata["rerank_score_kind"]``
    (``"probability"`` or ``"rank"``). ``metadata["title"]``, when a string, is passed to the
    ranker as the title. ``top_n=None`` keeps every document; ``score_threshold`` drops
    documents scoring below it (as LangChain's ``FlashrankRerank`` does). The ranker may be
    given positionally.

    Example::

        from hoprank.rankers import make_ranker
        compressor = HoprankDocumentCompressor(make_ranker("first", engine=engine), top_n=5)
        ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    ranker: Any
    top_n: int | None = 3
    score_threshold: float | None = None
    score_key: str = "relevance_score"

    def __init__(self, ranker: Any = None, /, **data: Any) -> None:
        if ranker is not None:
            data["ranker"] = ranker
        super().__init__(**data)

    def _to_hoprank(self, documents: Sequence[LCDocument]) -> list[Document]:
        out = []
        for i, d in enumerate(documents):
            title = d.metadata.get("title") if isinstance(d.metadata, dict) else None
            out.append(
                Document(id=str(i), text=d.page_content, title=title if isinstance(title, str) else None)
            )
        return out

    def _from_ranking(self, documents: Sequence[LCDocument], ranking: Ranking) -> list[LCDocument]:
        scores, kind = relevance_scores(ranking)
        out = []
        for rank, (doc, score) in enumerate(zip(ranking.documents, scores, strict=True), 1):
            if self.score_threshold is not None and score < self.score_threshold:
                break  # scores never increase down the ranking
            original = documents[int(doc.id)]
            metadata = {
                **original.metadata,
                self.score_key: score,
                "rerank_rank": rank,
                "rerank_score_kind": kind,
            }
            out.append(original.model_copy(update={"metadata": metadata}, deep=False))
        return out

    def _check(self) -> Ranker:
        if not isinstance(self.ranker, Ranker):
            raise TypeError(
                f"ranker must implement hoprank's Ranker protocol, got {type(self.ranker).__name__}"
            )
        return self.ranker

    def compress_documents(
        self, documents: Sequence[LCDocument], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[LCDocument]:
        """Rerank ``documents`` for ``query`` (sync; safe inside a running event loop)."""
        ranker = self._check()
        if not documents:
            return []
        ranking = ranker.rank(query, self._to_hoprank(documents), top_k=self.top_n)
        return self._from_ranking(documents, ranking)

    async def acompress_documents(
        self, documents: Sequence[LCDocument], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[LCDocument]:
        """Rerank ``documents`` for ``query`` on the running event loop."""
        ranker = self._check()
        if not documents:
            return []
        ranking = await ranker.arank(query, self._to_hoprank(documents), top_k=self.top_n)
        return self._from_ranking(documents, ranking)
