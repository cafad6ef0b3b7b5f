"""A LlamaIndex node postprocessor that reranks with any hoprank ranker."""

from __future__ import annotations

from typing import Any

from hoprank.adapters.scoring import relevance_scores
from hoprank.errors import InvalidInput, MissingExtra
from hoprank.rankers.base import Ranker
from hoprank.types import Document, Ranking

try:
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtra("adapters", "llama-index-core") from exc

from pydantic import Field

__all__ = ["HoprankNodePostprocessor"]


class HoprankNodePostprocessor(BaseNodePostprocessor):
    """Rerank LlamaIndex nodes with a hoprank ranker and keep the best ``top_n``.

    Nodes are returned as they are (same node objects, metadata untouched) wrapped in new
    ``NodeWithScore`` objects whose ``score`` is the relevance score (in [0, 1],
    non-increasing with rank; see :func:`hoprank.adapters.scoring.relevance_scores`). The
    ranker sees each node's content without metadata (``MetadataMode.NONE``).
    ``top_n=None`` keeps all; ``score_threshold`` drops nodes scoring below it. The ranker
    may be given positionally.

    Example::

        query_engine = index.as_query_engine(
            similarity_top_k=20, node_postprocessors=[HoprankNodePostprocessor(ranker, top_n=5)]
        )
    """

    ranker: Any = Field(description="a hoprank ranker (Ranker protocol)")
    top_n: int | None = 5
    score_threshold: float | None = Field(default=None, description="drop nodes scoring below this")

    def __init__(self, ranker: Any = None, /, **data: Any) -> None:
        if ranker is not None:
            data["ranker"] = ranker
        super().__init__(**data)

    @classmethod
    def class_name(cls) -> str:
        return "HoprankNodePostprocessor"

    def _prepare(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> tuple[Ranker, str, list[Document]]:
        if query_bundle is None:
            raise InvalidInput("HoprankNodePostprocessor needs a query (query_bundle or query_str)")
        if not isinstance(self.ranker, Ranker):
            raise TypeError(
                f"ranker must implement hoprank's Ranker protocol, got {type(self.ranker).__name__}"
            )
        docs = [
            Document(id=str(i), text=n.node.get_content(metadata_mode=MetadataMode.NONE))
            for i, n in enumerate(nodes)
        ]
        return self.ranker, query_bundle.query_str, docs

    def _from_ranking(self, nodes: list[NodeWithScore], ranking: Ranking) -> list[NodeWithScore]:
        scores, _ = relevance_scores(ranking)
        threshold = self.score_threshold
        return [
            NodeWithScore(node=nodes[int(d.id)].node, score=s)
            for d, s in zip(ranking.documents, scores, strict=True)
            if threshold is None or s >= threshold
        ]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        ranker, query, docs = self._prepare(nodes, query_bundle)
        return self._from_ranking(nodes, ranker.rank(query, docs, top_k=self.top_n))

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        ranker, query, docs = self._prepare(nodes, query_bundle)
        return self._from_ranking(nodes, await ranker.arank(query, docs, top_k=self.top_n))
