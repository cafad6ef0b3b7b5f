"""Baseline rankers without an LLM: the first-stage order, and a cross-encoder."""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from pydantic import Field

from hoprank.errors import MissingExtra
from hoprank.rankers.base import BaseRanker, RankerOutput, RankerSpec
from hoprank.rankers.config import ComponentConfig
from hoprank.rankers.passages import passage_text
from hoprank.types import Document, Step, Usage, timed_step

__all__ = ["CrossEncoder", "CrossEncoderConfig", "CrossEncoderRanker", "Identity"]


class Identity(BaseRanker):
    """Keeps the first-stage order (no model): the reference every reranker must beat."""

    name = "identity"

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        return RankerOutput(list(docs), Usage(), [])


class CrossEncoderConfig(ComponentConfig):
    """CrossEncoderRanker's parameters; ``model_kwargs`` go to ``CrossEncoder(...)``."""

    model: str
    max_length: int = 512
    batch_size: int = 32
    device: str | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)


class CrossEncoderRanker(BaseRanker):
    """A sentence-transformers ``CrossEncoder`` scoring (query, passage) pairs.

    Needs the ``local`` extra (``sentence-transformers``; :class:`MissingExtra` if it is
    absent). ``model`` is a local folder or hub name; the model is loaded once, lazily,
    on first use, and predictions run in a worker thread. Documents come back with the
    cross-encoder score (ties keep the prior order).

    No real cross-encoder weights install offline here (see ``models.md``), so the test
    of this class builds a tiny randomly initialised BERT from a config saved to a
    temporary folder: it checks the plumbing, not the ranking quality.
    """

    name = "cross-encoder"
    config_class: ClassVar[type[CrossEncoderConfig]] = CrossEncoderConfig
    config: CrossEncoderConfig

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        max_length: int = 512,
        batch_size: int = 32,
        device: str | None = None,
        **model_kwargs: Any,
    ) -> None:
        try:
            import sentence_transformers  # noqa: F401
        except ImportError as e:
            raise MissingExtra("local", "sentence-transformers") from e
        self.config = CrossEncoderConfig(
            model=os.fspath(model),
            max_length=max_length,
            batch_size=batch_size,
            device=device,
            model_kwargs=model_kwargs,
        )
        self.model_name = self.config.model
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.model_kwargs = model_kwargs
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(
                self.model_name, max_length=self.max_length, device=self.device, **self.model_kwargs
            )
        return self._model

    def _predict(self, pairs: list[tuple[str, str]]) -> list[float]:
        model = self._load()
        scores = model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return [float(s) for s in (scores.tolist() if hasattr(scores, "tolist") else scores)]

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        pairs = [(query, passage_text(d, neutralize=False)) for d in docs]
        step = Step(kind="cross-encoder", name=self.name, input={"model": self.model_name, "n": len(docs)})
        with timed_step(step):
            scores = await asyncio.to_thread(self._predict, pairs)
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))
        step.output = {"scores": {docs[i].id: round(scores[i], 4) for i in order}}
        return RankerOutput([docs[i].with_score(scores[i]) for i in order], Usage(llm_calls=0), [step])


CrossEncoder = CrossEncoderRanker
"""Alias of :class:`CrossEncoderRanker`."""


#: what the registry lists (hoprank.rankers.registry finds it)
RANKER_SPECS = (
    RankerSpec(
        "identity", "the first-stage order (no model)", lambda: Identity, needs_engine=False, order=10
    ),
    RankerSpec(
        "cross-encoder",
        "a sentence-transformers cross-encoder (model=...)",
        lambda: CrossEncoderRanker,
        needs_engine=False,
        aliases=("crossencoder",),
        served=False,
        order=70,
    ),
)
