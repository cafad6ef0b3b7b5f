"""Permutation self-consistency (Tang et al., 2023, arXiv 2310.07712).

A listwise ranker's output depends on the order it is shown: small models copy the
first stage's order or favour positions. ``SelfConsistency(ranker, samples=K)`` runs
``ranker`` on ``K`` seeded shuffles of the input list and aggregates the ``K`` rankings
into one:

- ``aggregate="borda"`` (default): mean position over the samples (Borda count), ties
  broken by the best single position, then the input order; a cheap, strong
  approximation of the Kemeny-optimal central ranking the paper uses;
- ``aggregate="rrf"``: reciprocal rank fusion (``k=60``) of the samples.

With ``include_input=True`` the first sample is the input order itself (the first
stage's signal kept as one vote). Shuffles are seeded per query (``seed`` and the query
text), so a run is reproducible. The cost is ``K`` times the inner ranker's; the samples
run one after another (an engine serialises model work anyway) and usage adds up.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any, ClassVar, Self

from pydantic import Field, model_validator

from hoprank.errors import ConfigError
from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.rankers.config import ComponentConfig
from hoprank.types import Document, Ranking, Step, Usage

__all__ = ["ConsistencyConfig", "SelfConsistency", "aggregate_rankings"]

AGGREGATES = ("borda", "rrf")


def aggregate_rankings(rankings: list[list[str]], ids: list[str], method: str = "borda") -> list[str]:
    """One order of ``ids`` from several full rankings of them (best first)."""
    if method not in AGGREGATES:
        raise ConfigError(f"aggregate must be one of {AGGREGATES}, got {method!r}")
    prior = {d: i for i, d in enumerate(ids)}
    pos: dict[str, list[int]] = {d: [] for d in ids}
    for r in rankings:
        if sorted(r) != sorted(ids):
            raise ConfigError("aggregate_rankings: every ranking must hold exactly the given ids")
        for i, d in enumerate(r):
            pos[d].append(i)
    if method == "rrf":
        score = {d: -sum(1.0 / (60 + p + 1) for p in ps) for d, ps in pos.items()}
    else:
        score = {d: sum(ps) / len(ps) for d, ps in pos.items()}
    return sorted(ids, key=lambda d: (score[d], min(pos[d]), prior[d]))


class ConsistencyConfig(ComponentConfig):
    """SelfConsistency's parameters: ``samples`` (>= 1), ``aggregate`` (``borda`` or
    ``rrf``), ``seed`` and ``include_input`` (the first sample is the input order)."""

    samples: int = Field(3, ge=1)
    aggregate: str = "borda"
    seed: int = 0
    include_input: bool = False

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        return self


class SelfConsistency(BaseRanker):
    """Wrap ``ranker``; rank ``samples`` shuffles of the input and aggregate the orders."""

    config_class: ClassVar[type[ConsistencyConfig]] = ConsistencyConfig
    config: ConsistencyConfig

    def __init__(self, ranker: BaseRanker, *, config: ConsistencyConfig | None = None, **params: Any) -> None:
        if not isinstance(ranker, BaseRanker):
            raise ConfigError(f"SelfConsistency wraps a hoprank ranker, got {type(ranker).__name__}")
        self.config = self.config_class.build(config, params)
        self.inner = ranker
        self.samples = self.config.samples
        self.aggregate = self.config.aggregate
        self.seed = self.config.seed
        self.include_input = self.config.include_input
        self.name = f"{ranker.name}+sc"

    def wrapped(self) -> BaseRanker:
        return self.inner

    def _shuffles(self, query: str, docs: list[Document]) -> list[list[Document]]:
        digest = hashlib.sha256(f"{self.seed}\x00{query}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        out: list[list[Document]] = []
        for j in range(self.samples):
            if j == 0 and self.include_input:
                out.append(list(docs))
                continue
            shuffled = list(docs)
            rng.shuffle(shuffled)
            out.append(shuffled)
        return out

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        results: list[Ranking] = []
        for shown in self._shuffles(query, docs):
            results.append(await self.inner.arank(query, shown))
        t0 = time.perf_counter()
        ids = [d.id for d in docs]
        order = aggregate_rankings([r.ids for r in results], ids, self.aggregate)
        by_id = {d.id: d for d in docs}
        n = len(order)
        ranked = [by_id[d].with_score(float(n - i)) for i, d in enumerate(order)]
        usage = Usage()
        trace: list[Step] = []
        for j, r in enumerate(results):
            usage = usage + r.usage
            for s in r.trace:
                s.input = {**s.input, "sample": j}
                trace.append(s)
        trace.append(
            Step(
                kind="aggregate",
                name=f"{self.aggregate} over {len(results)} samples",
                input={"samples": [r.ids for r in results], "include_input": self.include_input},
                output={"order": order},
                seconds=time.perf_counter() - t0,
            )
        )
        return RankerOutput(ranked, usage=usage, trace=trace)
