"""``BaseRetriever``: the shared driver every retriever builds on.

It validates input (non-empty query, ``k >= 1``; ``k`` above the corpus size returns
every document), numbers the results (``metadata["rank"]``, 1-based), gives the sync
facade (``search_sync`` / ``__call__``), bounded-concurrency ``search_many`` and the
OpenAI-format function tool (``as_tool`` / ``call_tool``) built from a pydantic model.

Subclasses implement :meth:`BaseRetriever._search` (one query) and may override
:meth:`BaseRetriever._search_batch` when the engine answers many queries at once.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from hoprank._sync import run_sync
from hoprank.errors import InvalidInput
from hoprank.types import Document

__all__ = ["BaseRetriever", "SearchArgs", "format_documents", "rank_documents"]


class SearchArgs(BaseModel):
    """Arguments of a retriever's tool call (bounds are set per retriever by ``args_model``)."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, description="The search query, in natural language or keywords.")
    k: int = Field(default=10, ge=1, le=100, description="How many documents to return.")


def rank_documents(docs: Sequence[Document], scores: Sequence[float] | None = None) -> list[Document]:
    """Copies of ``docs`` with ``metadata["rank"]`` set 1-based (and ``score`` if given)."""
    if scores is None:
        return [d.with_score(d.score, rank=i + 1) for i, d in enumerate(docs)]
    return [d.with_score(float(s), rank=i + 1) for i, (d, s) in enumerate(zip(docs, scores, strict=True))]


def format_documents(docs: Sequence[Document], *, max_chars: int = 600) -> str:
    """Render search results as plain text for an LLM tool observation.

    One block per document: ``[rank] id | title`` then the text cut to ``max_chars``.
    """
    if not docs:
        return "No documents found."
    blocks = []
    for i, d in enumerate(docs):
        rank = d.metadata.get("rank", i + 1)
        head = f"[{rank}] {d.id}" + (f" | {d.title}" if d.title else "")
        text = d.text if len(d.text) <= max_chars else d.text[: max_chars - 3].rstrip() + "..."
        blocks.append(f"{head}\n{text}")
    return "\n\n".join(blocks)


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's ``title`` keys: OpenAI tool schemas do not need them."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title":
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _clean_schema(prop) for name, prop in value.items()}
        elif isinstance(value, dict):
            out[key] = _clean_schema(value)
        else:
            out[key] = value
    return out


class BaseRetriever(ABC):
    """Shared driver for retrievers (implements :class:`hoprank.tools.base.Retriever`).

    Subclasses set ``name`` / ``description`` and implement :meth:`_search`, which gets
    a validated, stripped query and ``1 <= k <= corpus_size`` (when the size is known)
    and returns documents best first with ``score`` filled. Ranks are added here.
    """

    name: str = "search"
    description: str = "Search a document collection and return the most relevant passages."
    #: Largest ``k`` the tool schema allows (an LLM asking for more gets ``InvalidInput``).
    max_k: int = 100
    #: ``k`` the tool uses when the model leaves it out.
    default_k: int = 10
    #: Queries per engine call in :meth:`search_many` when :meth:`_search_batch` is overridden.
    batch_size: int = 64

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    async def _search(self, query: str, k: int) -> list[Document]:
        """Top-``k`` documents for one validated query, best first, scores filled."""

    async def _search_batch(self, queries: list[str], k: int) -> list[list[Document]]:
        """Answer several validated queries; the default runs :meth:`_search` for each."""
        return [await self._search(q, k) for q in queries]

    def _has_batch(self) -> bool:
        return type(self)._search_batch is not BaseRetriever._search_batch

    @property
    def corpus_size(self) -> int | None:
        """Number of searchable documents; ``None`` when unknown (remote engines)."""
        return None

    # ------------------------------------------------------------------ validation
    def _check_query(self, query: object) -> str:
        if not isinstance(query, str):
            raise InvalidInput(f"query must be a string, got {type(query).__name__}")
        q = query.strip()
        if not q:
            raise InvalidInput("query must not be empty or whitespace")
        return q

    def _check_k(self, k: object) -> int:
        if isinstance(k, bool) or not isinstance(k, int):
            raise InvalidInput(f"k must be an integer, got {type(k).__name__}")
        if k <= 0:
            raise InvalidInput(f"k must be >= 1, got {k}")
        n = self.corpus_size
        return k if n is None else min(k, n)

    # ------------------------------------------------------------------ public API
    async def search(self, query: str, k: int = 10) -> list[Document]:
        """The top-``k`` documents for ``query``, best first (``score``, ``metadata["rank"]``)."""
        q = self._check_query(query)
        kk = self._check_k(k)
        if kk == 0:  # empty collection
            return []
        return rank_documents(await self._search(q, kk))

    async def search_many(
        self, queries: Sequence[str], k: int = 10, *, concurrency: int = 4
    ) -> list[list[Document]]:
        """Search several queries; results keep the order of ``queries``.

        At most ``concurrency`` searches (or engine batches, for retrievers that answer
        many queries per call) run at once. Every query is validated before any runs.
        """
        if isinstance(queries, str):
            raise InvalidInput("search_many takes a sequence of queries, not one string")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInput(f"concurrency must be an integer >= 1, got {concurrency!r}")
        qs = [self._check_query(q) for q in queries]
        kk = self._check_k(k)
        if not qs:
            return []
        if kk == 0:
            return [[] for _ in qs]
        sem = asyncio.Semaphore(concurrency)
        if self._has_batch():
            chunks = [qs[i : i + self.batch_size] for i in range(0, len(qs), self.batch_size)]

            async def run_chunk(chunk: list[str]) -> list[list[Document]]:
                async with sem:
                    return await self._search_batch(chunk, kk)

            parts = await asyncio.gather(*(run_chunk(c) for c in chunks))
            return [rank_documents(r) for part in parts for r in part]

        async def one(q: str) -> list[Document]:
            async with sem:
                return rank_documents(await self._search(q, kk))

        return list(await asyncio.gather(*(one(q) for q in qs)))

    def search_sync(self, query: str, k: int = 10) -> list[Document]:
        """Sync facade of :meth:`search`."""
        return run_sync(self.search(query, k))

    def search_many_sync(
        self, queries: Sequence[str], k: int = 10, *, concurrency: int = 4
    ) -> list[list[Document]]:
        """Sync facade of :meth:`search_many`."""
        return run_sync(self.search_many(queries, k, concurrency=concurrency))

    def __call__(self, query: str, k: int = 10) -> list[Document]:
        return self.search_sync(query, k)

    # ------------------------------------------------------------------ tool calling
    def args_model(self) -> type[SearchArgs]:
        """The pydantic model of this retriever's tool arguments (``k`` bounded by ``max_k``)."""
        model: type[SearchArgs] = create_model(
            "SearchArgs",
            __base__=SearchArgs,
            k=(
                int,
                Field(
                    default=min(self.default_k, self.max_k),
                    ge=1,
                    le=self.max_k,
                    description="How many documents to return.",
                ),
            ),
        )
        return model

    def as_tool(self) -> dict[str, Any]:
        """This retriever as an OpenAI-format function tool (name, description, JSON schema)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": _clean_schema(self.args_model().model_json_schema()),
            },
        }

    def parse_arguments(self, arguments: dict[str, Any] | str) -> SearchArgs:
        """Validate tool-call arguments (a dict or the JSON string a model emitted)."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as e:
                raise InvalidInput(f"tool arguments for {self.name!r} are not valid JSON: {e}") from e
        if not isinstance(arguments, dict):
            raise InvalidInput(
                f"tool arguments for {self.name!r} must be a JSON object, got {type(arguments).__name__}"
            )
        try:
            return self.args_model().model_validate(arguments)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'arguments'}: {err['msg']}" for err in e.errors()
            )
            raise InvalidInput(f"invalid arguments for tool {self.name!r}: {problems}") from e

    async def call_tool(self, arguments: dict[str, Any] | str) -> list[Document]:
        """Run a tool call: validate ``arguments`` with pydantic, then :meth:`search`.

        Invalid arguments (bad JSON, missing/empty query, ``k`` out of bounds, unknown
        keys) raise :class:`~hoprank.errors.InvalidInput`.
        """
        args = self.parse_arguments(arguments)
        return await self.search(args.query, args.k)

    def call_tool_sync(self, arguments: dict[str, Any] | str) -> list[Document]:
        """Sync facade of :meth:`call_tool`."""
        return run_sync(self.call_tool(arguments))

    def __repr__(self) -> str:
        n = self.corpus_size
        return f"{type(self).__name__}(name={self.name!r}, docs={'?' if n is None else n})"
