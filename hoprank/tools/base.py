"""The retriever contract: async ``search`` plus an OpenAI-format tool description."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from hoprank.types import Document

__all__ = ["Retriever"]


@runtime_checkable
class Retriever(Protocol):
    """Anything that answers a text query with scored documents, best first.

    Returned documents carry ``score`` and ``metadata["rank"]`` (1-based).
    """

    name: str
    description: str

    async def search(self, query: str, k: int = 10) -> list[Document]: ...

    async def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Document]]: ...

    def as_tool(self) -> dict[str, Any]:
        """This retriever as an OpenAI-format function tool (name, description, JSON schema)."""
        ...
