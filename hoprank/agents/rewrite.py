"""Query reformulation: multi-query paraphrases, a keyword query, a HyDE passage.

Each strategy returns a list of queries ready for a retriever (the original first when
``include_original``). Output that cannot be used falls back to the original query and
the trace says so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from hoprank._sync import run_sync
from hoprank.agents._common import gather_bounded, llm_step, resolve_prompt, unique
from hoprank.agents._json import parse_model
from hoprank.errors import InvalidInput, ParseError
from hoprank.llm.base import LLM
from hoprank.prompts.registry import PromptLike
from hoprank.types import Step, Usage

__all__ = ["Rewrite", "Rewriter", "Strategy"]

Strategy = Literal["multi_query", "keywords", "hyde"]

_DEFAULT_PROMPTS: dict[str, str] = {
    "multi_query": "rewrite-multi-query",
    "keywords": "rewrite-keywords",
    "hyde": "rewrite-hyde",
}
_PREFIX_RE = re.compile(r"^\s*(?:keywords?|query|queries|passage|answer)\s*:\s*", re.IGNORECASE)


class _Queries(BaseModel):
    queries: list[str]

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: object) -> object:
        if isinstance(data, dict) and "queries" not in data:
            for key in ("rewrites", "paraphrases", "sub_questions"):
                if key in data:
                    return {"queries": data[key]}
        return data

    @field_validator("queries")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        v = [q.strip() for q in v if q.strip()]
        if not v:
            raise ValueError("no queries")
        return v


class Rewrite(BaseModel):
    """The queries a strategy produced for one input query."""

    query: str
    strategy: str
    queries: list[str]
    fallback: bool = False
    usage: Usage = Field(default_factory=Usage)
    trace: list[Step] = Field(default_factory=list)


class Rewriter:
    """Reformulates a query with one strategy.

    ``multi_query``: ``n`` paraphrases (JSON); ``keywords``: one keyword query;
    ``hyde``: one hypothetical answer passage used as the query. ``prompt`` overrides
    the strategy's built-in template (variables ``query`` and, for multi-query, ``n``).
    """

    def __init__(
        self,
        engine: LLM,
        strategy: Strategy = "multi_query",
        *,
        prompt: PromptLike | None = None,
        n: int = 3,
        include_original: bool = True,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        concurrency: int = 4,
    ) -> None:
        key = strategy.replace("-", "_")
        if key not in _DEFAULT_PROMPTS:
            raise InvalidInput(
                f"unknown rewrite strategy {strategy!r}; choose from {sorted(_DEFAULT_PROMPTS)}"
            )
        if n < 1:
            raise InvalidInput("n must be >= 1")
        self.engine = engine
        self.strategy: str = key
        self.prompt = resolve_prompt(prompt, _DEFAULT_PROMPTS[key])
        self.n = n
        self.include_original = include_original
        self.max_tokens = max_tokens or {"multi_query": 160, "keywords": 40, "hyde": 160}[key]
        self.temperature = temperature
        self.concurrency = concurrency

    def _parse(self, text: str, continuation: str) -> list[str]:
        if self.strategy == "multi_query":
            try:
                return parse_model(text, _Queries, list_field="queries").queries[: self.n]
            except ParseError as first:
                if continuation == text:
                    raise
                try:
                    return parse_model(continuation, _Queries, list_field="queries").queries[: self.n]
                except ParseError:
                    raise first from None
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        if not lines:
            raise ParseError("empty output", raw=text)
        if self.strategy == "keywords":
            out = _PREFIX_RE.sub("", lines[0]).strip().strip('"').strip()
        else:
            out = _PREFIX_RE.sub("", " ".join(lines)).strip()
        if not out:
            raise ParseError("empty output", raw=text)
        return [out]

    async def arewrite(self, query: str) -> Rewrite:
        """Rewrite one query."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query must be a non-empty string")
        query = query.strip()
        variables: dict[str, object] = {"query": query}
        if "n" in self.prompt.variables:
            variables["n"] = self.n
        text, step, comp = await llm_step(
            self.engine,
            self.prompt,
            variables,
            name=f"rewrite.{self.strategy}",
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )
        fallback = False
        try:
            produced = self._parse(text, comp.text)
        except ParseError as e:
            step.error = str(e)
            step.fallback = True
            fallback = True
            produced = []
        queries = unique([query, *produced] if self.include_original or fallback else produced)
        step.output = {"queries": queries}
        return Rewrite(
            query=query,
            strategy=self.strategy,
            queries=queries,
            fallback=fallback,
            usage=step.usage,
            trace=[step],
        )

    async def arewrite_many(self, queries: Sequence[str]) -> list[Rewrite]:
        """Rewrite several queries, at most ``concurrency`` at a time, in order."""
        return await gather_bounded((self.arewrite(q) for q in queries), self.concurrency)

    def rewrite(self, query: str) -> Rewrite:
        """Sync facade of :meth:`arewrite`."""
        return run_sync(self.arewrite(query))
