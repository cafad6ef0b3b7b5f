"""Small fakes for the agent-layer control-flow tests (no model, no index)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.types import Document

DOCS = [
    Document(
        id="d1",
        title="Kiss and Tell",
        text="Kiss and Tell is a 1945 film starring Shirley Temple as Corliss Archer.",
    ),
    Document(
        id="d2",
        title="Shirley Temple",
        text="Shirley Temple later served as Chief of Protocol of the United States.",
    ),
    Document(id="d3", title="Corliss Archer", text="Corliss Archer is a fictional teenage girl from radio."),
    Document(id="d4", title="Meet Corliss Archer", text="Meet Corliss Archer was a radio program from 1943."),
    Document(id="d5", title="Protocol", text="The Chief of Protocol is a position in the State Department."),
]


class FakeRetriever:
    """Word-overlap retrieval over ``docs``. ``fail`` maps a query substring to an
    exception to raise (after ``delay``, or at once with ``fail_first``); ``delay``
    sleeps per search; in-flight and cancelled searches are recorded."""

    name = "fake"
    description = "fake word-overlap retriever"

    def __init__(
        self,
        docs: Sequence[Document] = DOCS,
        *,
        fail: dict[str, BaseException] | None = None,
        delay: float = 0.0,
        on_cancel: Callable[[str], None] | None = None,
        fail_first: bool = False,
    ) -> None:
        self.fail_first = fail_first
        self.docs = list(docs)
        self.fail = fail or {}
        self.delay = delay
        self.queries: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled: list[str] = []
        self.on_cancel = on_cancel

    async def search(self, query: str, k: int = 10) -> list[Document]:
        self.queries.append(query)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            failing = [exc for key, exc in self.fail.items() if key in query]
            if failing and self.fail_first:
                raise failing[0]
            if self.delay:
                await asyncio.sleep(self.delay)
            if failing:
                raise failing[0]
            words = {w.lower().strip("?.,\"'") for w in query.split()}
            scored = []
            for d in self.docs:
                dw = {w.lower().strip("?.,\"'") for w in d.full_text.split()}
                overlap = len(words & dw)
                if overlap:
                    scored.append((overlap, d))
            scored.sort(key=lambda t: -t[0])
            return [d.with_score(float(s), rank=i + 1) for i, (s, d) in enumerate(scored[:k])]
        except asyncio.CancelledError:
            self.cancelled.append(query)
            raise
        finally:
            self.in_flight -= 1

    async def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Document]]:
        return [await self.search(q, k) for q in queries]

    def as_tool(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": "search", "parameters": {}}}


class ReverseRanker(BaseRanker):
    """Reverses its input and records the queries it was asked."""

    name = "reverse"

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.pools: list[list[str]] = []

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        self.queries.append(query)
        self.pools.append([d.id for d in docs])
        return RankerOutput(list(reversed(docs)))


def dec_out(*subs: str, find_first: str = "") -> str:
    """A decomposer reply as the continuation of the prefill ``{"find_first": "``."""
    import json

    return json.dumps({"find_first": find_first, "sub_questions": list(subs)})[len('{"find_first": "') :]
