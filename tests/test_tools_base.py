"""BaseRetriever contract: validation, sync facade, bounded search_many, tool schema and
call_tool, checked on a real BM25 index over the HotpotQA corpus (plus a tiny counting
subclass for the concurrency bound)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hoprank.errors import HoprankError, InvalidInput
from hoprank.tools import BaseRetriever, BM25Retriever, Retriever, SearchArgs, format_documents, load_corpus
from hoprank.types import Document

HOTPOT = "hotpotqa-dev-distractor-500"


@pytest.fixture(scope="module")
def hotpot_docs(datasets_dir: Path) -> list[Document]:
    return load_corpus(datasets_dir / HOTPOT / "corpus.jsonl")


@pytest.fixture(scope="module")
def small_bm25(hotpot_docs: list[Document]) -> BM25Retriever:
    return BM25Retriever.from_documents(hotpot_docs[:40])


def test_satisfies_protocol(small_bm25: BM25Retriever) -> None:
    assert isinstance(small_bm25, Retriever)
    assert isinstance(small_bm25, BaseRetriever)


async def test_search_fills_scores_and_ranks(small_bm25: BM25Retriever) -> None:
    docs = await small_bm25.search("Shirley Temple actress", k=3)
    assert len(docs) == 3
    assert [d.metadata["rank"] for d in docs] == [1, 2, 3]
    scores = [d.score for d in docs]
    assert all(isinstance(s, float) for s in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert docs[0].title == "Shirley Temple"


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
async def test_empty_query_rejected(small_bm25: BM25Retriever, query: str) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        await small_bm25.search(query, k=3)


@pytest.mark.parametrize("k", [0, -1])
async def test_nonpositive_k_rejected(small_bm25: BM25Retriever, k: int) -> None:
    with pytest.raises(InvalidInput, match="k must be"):
        await small_bm25.search("Shirley Temple", k=k)


async def test_non_int_k_and_non_str_query_rejected(small_bm25: BM25Retriever) -> None:
    with pytest.raises(InvalidInput):
        await small_bm25.search("x", k=2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await small_bm25.search(None, k=2)  # type: ignore[arg-type]


async def test_k_above_corpus_returns_every_match_and_no_padding(small_bm25: BM25Retriever) -> None:
    corpus = small_bm25.documents
    q = "Kiss and Tell radio 1945"
    docs = await small_bm25.search(q, k=10_000)
    # every document that shares a (non-stopword, stemmed) term, each once, none other
    toks = set(small_bm25._tokenize([q])[0])
    per_doc = small_bm25._tokenize([d.full_text for d in corpus])
    expected = {d.id for d, t in zip(corpus, per_doc, strict=True) if toks & set(t)}
    assert toks and len(docs) == len({d.id for d in docs}) and all(d.score > 0 for d in docs)
    assert {d.id for d in docs} == expected
    assert 0 < len(docs) < len(corpus) == 40
    assert await small_bm25.search("the of and", k=10) == []  # stopwords only: no match


def test_sync_facade_and_call(small_bm25: BM25Retriever) -> None:
    a = small_bm25.search_sync("Kiss and Tell 1945 film", 3)
    b = small_bm25("Kiss and Tell 1945 film", 3)
    assert [d.id for d in a] == [d.id for d in b]


async def test_sync_facade_inside_running_loop(small_bm25: BM25Retriever) -> None:
    # run_sync must not raise "event loop is already running"
    assert len(small_bm25.search_sync("Corliss Archer", 2)) == 2


async def test_search_many_matches_search(small_bm25: BM25Retriever) -> None:
    queries = ["Shirley Temple", "Corliss Archer radio", "Janet Waldo voice actress"]
    many = await small_bm25.search_many(queries, k=4, concurrency=2)
    single = [await small_bm25.search(q, k=4) for q in queries]
    assert [[d.id for d in r] for r in many] == [[d.id for d in r] for r in single]
    assert all(r[0].metadata["rank"] == 1 for r in many)


async def test_search_many_validates_everything_first(small_bm25: BM25Retriever) -> None:
    with pytest.raises(InvalidInput):
        await small_bm25.search_many(["ok", " "], k=3)
    with pytest.raises(InvalidInput):
        await small_bm25.search_many("a string", k=3)
    with pytest.raises(InvalidInput):
        await small_bm25.search_many(["ok"], k=3, concurrency=0)
    assert await small_bm25.search_many([], k=3) == []


class _Counting(BaseRetriever):
    """Control-flow probe: records how many searches overlap (no batch hook)."""

    def __init__(self, docs: list[Document]) -> None:
        self.docs = docs
        self.active = 0
        self.peak = 0

    @property
    def corpus_size(self) -> int:
        return len(self.docs)

    async def _search(self, query: str, k: int) -> list[Document]:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.01)
        self.active -= 1
        if query == "boom":
            raise HoprankError("engine down")
        hits = [d for d in self.docs if query.lower() in d.full_text.lower()] or self.docs
        return [d.with_score(1.0 / (i + 1)) for i, d in enumerate(hits[:k])]


async def test_search_many_bounds_concurrency(hotpot_docs: list[Document]) -> None:
    r = _Counting(hotpot_docs[:30])
    out = await r.search_many([f"q{i}" for i in range(12)], k=3, concurrency=3)
    assert len(out) == 12 and r.peak == 3
    with pytest.raises(HoprankError, match="engine down"):
        await r.search_many(["a", "boom", "c"], k=2)


def test_tool_schema_is_openai_format(small_bm25: BM25Retriever) -> None:
    tool = small_bm25.as_tool()
    assert tool["type"] == "function"
    fn = tool["function"]
    assert fn["name"] == "bm25_search" and fn["description"]
    params = fn["parameters"]
    assert params["type"] == "object"
    assert params["required"] == ["query"]
    assert params["properties"]["query"]["type"] == "string"
    k = params["properties"]["k"]
    assert (k["type"], k["minimum"], k["maximum"], k["default"]) == ("integer", 1, 100, 10)
    assert params["additionalProperties"] is False
    json.dumps(tool)  # serialisable as sent to an API


@pytest.mark.parametrize(
    "arguments",
    [
        {"query": "Shirley Temple"},
        {"query": "Shirley Temple", "k": 100},
        {"query": "x", "k": 0},
        {"query": "x", "k": 101},
        {"query": ""},
        {"k": 3},
        {"query": "x", "extra": 1},
        {"query": 5},
    ],
)
def test_tool_schema_agrees_with_pydantic(small_bm25: BM25Retriever, arguments: dict[str, object]) -> None:
    """The emitted JSON schema is valid and accepts exactly what the pydantic model accepts."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = small_bm25.as_tool()["function"]["parameters"]
    jsonschema.Draft202012Validator.check_schema(schema)
    by_schema = jsonschema.Draft202012Validator(schema).is_valid(arguments)
    try:
        small_bm25.parse_arguments(arguments)
        by_pydantic = True
    except InvalidInput:
        by_pydantic = False
    assert by_schema == by_pydantic
    model = small_bm25.args_model()
    assert issubclass(model, SearchArgs)
    assert model.model_validate({"query": "q"}).k == 10


def test_tool_bounds_follow_max_k(hotpot_docs: list[Document]) -> None:
    r = BM25Retriever.from_documents(hotpot_docs[:10], name="wiki_search", description="Search Wikipedia.")
    r.max_k, r.default_k = 5, 3
    p = r.as_tool()["function"]
    assert p["name"] == "wiki_search" and p["description"] == "Search Wikipedia."
    assert p["parameters"]["properties"]["k"]["maximum"] == 5
    assert p["parameters"]["properties"]["k"]["default"] == 3
    with pytest.raises(InvalidInput, match="k"):
        r.parse_arguments({"query": "x", "k": 6})


async def test_call_tool_with_dict_and_json_string(small_bm25: BM25Retriever) -> None:
    a = await small_bm25.call_tool({"query": "Shirley Temple", "k": 3})
    b = await small_bm25.call_tool('{"query": "Shirley Temple", "k": 3}')
    assert [d.id for d in a] == [d.id for d in b] and len(a) == 3
    c = small_bm25.call_tool_sync({"query": "American film"})  # default k
    assert len(c) == 10 and len(small_bm25.search_sync("American film", 40)) > 10


@pytest.mark.parametrize(
    "arguments",
    [
        "{not json",
        "[1, 2]",
        {},
        {"query": ""},
        {"query": "   "},
        {"query": "x", "k": 0},
        {"query": "x", "k": 101},
        {"query": "x", "k": "many"},
        {"query": "x", "filter": "y"},
    ],
)
async def test_call_tool_rejects_bad_arguments(small_bm25: BM25Retriever, arguments: object) -> None:
    with pytest.raises(InvalidInput):
        await small_bm25.call_tool(arguments)  # type: ignore[arg-type]


def test_format_documents(small_bm25: BM25Retriever) -> None:
    docs = small_bm25("Shirley Temple", 2)
    text = format_documents(docs, max_chars=50)
    assert text.startswith(f"[1] {docs[0].id} | Shirley Temple\n")
    assert "[2] " in text and "..." in text
    assert format_documents([]) == "No documents found."
