"""Core data types shared by every layer: documents, rankings, usage and traces."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Document", "Ranking", "Step", "Usage", "timed_step"]


class Document(BaseModel):
    """A retrievable unit of text. Frozen: rankers return new objects, never mutate."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    title: str | None = None
    score: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def with_score(self, score: float | None, **metadata: Any) -> Document:
        """A copy with a new score (and extra metadata merged in)."""
        md = {**self.metadata, **metadata} if metadata else self.metadata
        return self.model_copy(update={"score": score, "metadata": md})

    @property
    def full_text(self) -> str:
        """Title and text joined the way rankers and retrievers see them."""
        return f"{self.title}: {self.text}" if self.title else self.text


class Usage(BaseModel):
    """Cost of some work: tokens, calls and wall-clock seconds. Adds with ``+``."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    seconds: float = 0.0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            llm_calls=self.llm_calls + other.llm_calls,
            seconds=self.seconds + other.seconds,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Step(BaseModel):
    """One recorded step of a ranker, pipeline or agent (JSON-serialisable).

    ``kind`` names the step type (``window``, ``llm``, ``retrieve``, ``decompose``...),
    ``prompt`` is ``name@version#hash`` when a prompt was rendered, ``raw`` the raw model
    output, ``fallback`` marks a step whose output could not be used and was replaced by
    a defined fallback (``error`` says why).
    """

    kind: str
    name: str = ""
    input: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = None
    raw: str | None = None
    fallback: bool = False
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    started_at: float = Field(default_factory=time.time)
    seconds: float = 0.0


class Ranking(BaseModel):
    """A ranker's answer: ``documents`` is always a permutation of the input, best first."""

    query: str
    documents: list[Document]
    usage: Usage = Field(default_factory=Usage)
    trace: list[Step] = Field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [d.id for d in self.documents]

    @property
    def fallbacks(self) -> int:
        """Number of steps that fell back to a defined default."""
        return sum(1 for s in self.trace if s.fallback)


@contextmanager
def timed_step(step: Step) -> Iterator[Step]:
    """Fill ``step.started_at`` and ``step.seconds`` around a block."""
    t0 = time.perf_counter()
    step.started_at = time.time()
    try:
        yield step
    finally:
        step.seconds = time.perf_counter() - t0
