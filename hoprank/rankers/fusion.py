"""Fusion of a ranker's order with the first-stage (input) order.

Small LLM rerankers order a list worse than they judge it, and the first stage carries
signal the model misses; reciprocal rank fusion of the two orders is the standard cheap
remedy (the same RRF the hybrid retriever uses, :func:`hoprank.runs.rrf_fuse`).
``PriorFusion(ranker, weight=w)`` ranks by ``1/(k + r_model) + w/(k + r_input)``; ties
keep the model's order. ``weight=0`` is the model's order unchanged.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from pydantic import Field, field_validator

from hoprank.errors import ConfigError
from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.rankers.config import ComponentConfig
from hoprank.runs import rrf_fuse
from hoprank.types import Document, Step

__all__ = ["FusionConfig", "PriorFusion"]


class FusionConfig(ComponentConfig):
    """PriorFusion's parameters: the input order's RRF ``weight`` (>= 0) and RRF ``k`` (>= 0)."""

    weight: float = Field(1.0, ge=0)
    k: int = Field(60, ge=0)

    @field_validator("weight", "k", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"prior weight and RRF k must be numbers, got {value!r}")
        return value


class PriorFusion(BaseRanker):
    """Wrap ``ranker``; fuse its full order with the input order by weighted RRF."""

    config_class: ClassVar[type[FusionConfig]] = FusionConfig
    config: FusionConfig

    def __init__(self, ranker: BaseRanker, *, config: FusionConfig | None = None, **params: Any) -> None:
        if not isinstance(ranker, BaseRanker):
            raise ConfigError(f"PriorFusion wraps a hoprank ranker, got {type(ranker).__name__}")
        self.config = self.config_class.build(config, params)
        self.inner = ranker
        self.weight = self.config.weight
        self.k = self.config.k
        self.name = f"{ranker.name}+prior"

    def wrapped(self) -> BaseRanker:
        return self.inner

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
