"""Fusion of a ranker's order with the first-stage (input) order.

Small LLM rerankers order a list worse than they judge it, and the first stage carries
signal the model misses; reciprocal rank fusion of the two orders is the standard cheap
remedy (the same RRF the hybrid retriever uses, :func:`hoprank.runs.rrf_fuse`).
``PriorFusion(ranker, weight=w)`` ranks by ``1/(k + r_model) + w/(k + r_input)``; ties
keep the model's order. ``weight=0`` is the model's order unchanged.
"""

from __future__ import annotations

import time

from hoprank.errors import ConfigError
from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.runs import rrf_fuse
from hoprank.types import Document, Step

__all__ = ["PriorFusion"]


class PriorFusion(BaseRanker):
    """Wrap ``ranker``; fuse its full order with the input order by weighted RRF."""

    def __init__(self, ranker: BaseRanker, *, weight: float = 1.0, k: int = 60) -> None:
        if not isinstance(ranker, BaseRanker):
            raise ConfigError(f"PriorFusion wraps a hoprank ranker, got {type(ranker).__name__}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ConfigError(f"prior weight must be a number >= 0, got {weight!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"RRF k must be an integer >= 0, got {k!r}")
        self.inner = ranker
        self.weight = float(weight)
        self.k = k
        self.name = f"{ranker.name}+prior"

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        inner = await self.inner.arank(query, docs)
        t0 = time.perf_counter()
        fused = rrf_fuse([inner.documents, docs], k=self.k, weights=[1.0, self.weight])
        step = Step(
            kind="fusion",
            name="rrf with the input order",
            input={"weight": self.weight, "k": self.k, "model_order": inner.ids},
            output={"order": [d.id for d in fused]},
            seconds=time.perf_counter() - t0,
        )
        return RankerOutput(fused, usage=inner.usage, trace=[*inner.trace, step])
