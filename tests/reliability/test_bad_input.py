"""Bad input: every odd input gets a defined result or a typed error with a clear message.

Rankers (identity, RankGPT, FIRST, pointwise) over the scripted engine for control flow,
over a real OpenAIEngine + the fault server with the offline tiktoken tokenizer for the
token budget, and over the real SmolLM2 tokenizer (chat template) for prompt sizes;
BM25 retrieval on real DL19 passages; the server's ``/v1/rerank`` over live uvicorn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _faultkit import ModelBehindFaults
from _live_server import live_server
from servers.fault_server import FaultServer

from hoprank.errors import ContextOverflow, InvalidInput
from hoprank.llm.engines.openai_engine import OpenAIEngine
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.llm.tokenizers.tiktoken_offline import TiktokenTokenizer
from hoprank.rankers import FIRST, make_ranker
from hoprank.rankers.base import BaseRanker
from hoprank.rankers.passages import make_labels
from hoprank.server import ServerSettings, create_app
from hoprank.tools.bm25 import BM25Retriever
from hoprank.types import Document

RANKERS = ("identity", "rankgpt", "first", "pointwise")
WEIRD = [
    "\x00\x01\x02 nul and control \x1b[31m red \x7f",
    "lone surrogates \ud800 and \udfff here",
    "\u202e right-to-left override \ufeff bom \u200b zwsp",
    "emoji \U0001f600 and CJK 漢字 and combining e\u0301",
    "\r\n\t  \n",
]


def scripted() -> ScriptedEngine:
    def permutation(messages: Any) -> str:
        return "[2] > [1]"

    # later labels score higher: every window is reversed
    return ScriptedEngine(
        permutation, logprobs_fn=lambda m, c, p: {x: -0.1 * (len(c) - i) for i, x in enumerate(c)}
    )


def ranker(name: str, engine: Any = None, **kw: Any) -> BaseRanker:
    return make_ranker(name, None if name == "identity" else (engine or scripted()), **kw)


def docs(n: int, text: str = "passage {i}") -> list[Document]:
    return [Document(id=f"d{i}", text=text.format(i=i)) for i in range(n)]


def is_permutation(ids: list[str], given: list[Document]) -> bool:
    return len(ids) == len(set(ids)) == len(given) and set(ids) == {d.id for d in given}


# ----------------------------------------------------------------------------- rankers


@pytest.mark.parametrize("name", RANKERS)
def test_empty_one_and_duplicate_documents(name: str) -> None:
    r = ranker(name)
    empty = r.rank("q", [])
    assert empty.ids == [] and empty.usage.llm_calls == 0
    one = r.rank("q", docs(1))
    assert one.ids == ["d0"] and one.usage.llm_calls == 0  # nothing to order: no model call
    with pytest.raises(InvalidInput, match=r"duplicate document ids: \['a'\]"):
        r.rank("q", [Document(id="a", text="x"), Document(id="b", text="y"), Document(id="a", text="z")])
    with pytest.raises(InvalidInput, match=r"hoprank\.Document"):
        r.rank("q", ["plain strings are not documents"])  # type: ignore[list-item]


@pytest.mark.parametrize("name", RANKERS)
def test_empty_and_weird_texts_and_query(name: str) -> None:
    given = [Document(id=f"w{i}", text=t) for i, t in enumerate(WEIRD)] + [Document(id="e", text="")]
    for query in ("q", "\x00\ud800 weird \u202e query", ""):
        ranking = ranker(name).rank(query, given)
        assert is_permutation(ranking.ids, given)
    # the returned documents are the caller's, untouched (scrubbing only affects prompts)
    assert {d.text for d in ranking.documents} == {d.text for d in given}


@pytest.mark.parametrize("name", RANKERS)
def test_top_k_bounds(name: str) -> None:
    r = ranker(name)
    assert len(r.rank("q", docs(3), top_k=10).ids) == 3  # more than n: all of them
    assert len(r.rank("q", docs(3), top_k=2).ids) == 2
    for bad in (0, -1):
        with pytest.raises(InvalidInput, match="top_k must be >= 1"):
            r.rank("q", docs(3), top_k=bad)


def test_thousands_of_documents() -> None:
    given = docs(2000, "passage {i} about something")
    t0 = time.perf_counter()
    ident = ranker("identity").rank("q", given)
    assert ident.ids == [d.id for d in given]
    first = FIRST(scripted(), window=20, step=10)
    ranking = first.rank("q", given, top_k=None)
    elapsed = time.perf_counter() - t0
    assert is_permutation(ranking.ids, given)
    assert len(ranking.trace) == 199 and ranking.fallbacks == 0  # ceil((2000 - 20) / 10) + 1 windows
    assert ranking.ids != ident.ids
    assert elapsed < 60, elapsed


# ----------------------------------------------------------------------------- token budget


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    with FaultServer(ModelBehindFaults()) as fs:
        yield fs


def _tiktoken_engine(fs: FaultServer, context_window: int) -> OpenAIEngine:
    return OpenAIEngine(
        "gpt-4o",
        base_url=fs.base_url,
        api_key="sk-test",
        server="vllm",
        context_window=context_window,
        tokenizer=TiktokenTokenizer("o200k_base"),
    )


@pytest.mark.parametrize("name", ["rankgpt", "first", "pointwise"])
async def test_huge_documents_are_cut_to_the_context_window(fault: FaultServer, name: str) -> None:
    """100,000-character documents: every request sent fits the engine's context window,
    counted with a real tokenizer (o200k_base) on exactly what went over the wire."""
    fault.requests.clear()
    window = 2048
    engine = _tiktoken_engine(fault, window)
    text = "relevant " + "lorem ipsum dolor sit amet " * 3800  # ~100k characters
    assert len(text) >= 100_000
    given = [Document(id=f"h{i}", text=f"{i} {text}") for i in range(20)]
    ranking = await ranker(name, engine, max_passage_tokens=500).arank("find the relevant one", given)
    await engine.aclose()
    assert is_permutation(ranking.ids, given) and ranking.fallbacks == 0
    tok = engine.tokenizer
    assert fault.requests
    for req in fault.requests:
        body = req.json
        used = sum(tok.count(m["content"]) + 6 for m in body["messages"])
        assert used + body["max_tokens"] <= window, (used, body["max_tokens"])
        assert used > 300  # the passages are there, only cut


def test_prompt_fits_a_real_chat_template(smollm2_engine: Any) -> None:
    """The SmolLM2 tokenizer and chat template: a window of 20 huge passages is cut so the
    rendered prompt plus the answer stays below a 1,024-token context window."""

    class Small:
        def __init__(self, inner: Any) -> None:
            self.inner, self.context_window = inner, 1024

        def __getattr__(self, item: str) -> Any:
            return getattr(self.inner, item)

    engine = Small(smollm2_engine)
    given = [Document(id=f"h{i}", text="word " * 20_000) for i in range(20)]
    for r in (FIRST(engine, window=20), make_ranker("rankgpt", engine, window=20)):  # type: ignore[arg-type]
        assert hasattr(r, "build_prompt")
        style = "letters" if isinstance(r, FIRST) else "numeric"
        labels = make_labels(20, style)
        max_new = 1 if isinstance(r, FIRST) else 108
        wp = r.build_prompt("a query", given, labels, max_new_tokens=max_new)
        rendered = smollm2_engine.render(wp.messages)
        counted = len(smollm2_engine.tokenizer.encode(rendered))
        assert counted + max_new <= 1024, counted
        assert abs(counted - wp.prompt_tokens) <= 4 and wp.passage_budget >= 8
    with pytest.raises(ContextOverflow, match="do not fit"):
        FIRST(engine, window=20).build_prompt(
            "word " * 2000, given, make_labels(20, "letters"), max_new_tokens=1
        )


@pytest.mark.parametrize("name", ["rankgpt", "first", "pointwise"])
async def test_very_long_query_is_a_typed_context_overflow(fault: FaultServer, name: str) -> None:
    fault.requests.clear()
    engine = _tiktoken_engine(fault, 4096)
    with pytest.raises(ContextOverflow) as info:
        await ranker(name, engine).arank("why " * 20_000, docs(5))
    await engine.aclose()
    assert info.value.context_window == 4096 and fault.count == 0  # refused before any request
    # a long query that fits is fine
    ranking = await ranker(name, _tiktoken_engine(fault, 4096)).arank("why " * 500, docs(5))
    assert is_permutation(ranking.ids, docs(5))


# ----------------------------------------------------------------------------- retrievers


@pytest.fixture(scope="module")
def bm25(datasets_dir: Path) -> BM25Retriever:
    path = datasets_dir / "trec-dl-2019-passage" / "corpus.jsonl"
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(300), f, strict=False)]
    return BM25Retriever.from_documents([Document(id=r["id"], text=r["text"]) for r in rows])


def test_retriever_bad_input(bm25: BM25Retriever) -> None:
    for bad in ("", "   \n\t"):
        with pytest.raises(InvalidInput, match="empty"):
            bm25.search_sync(bad, 3)
    for k in (0, -5):
        with pytest.raises(InvalidInput, match="k must be >= 1"):
            bm25.search_sync("what is a dog", k)
    assert bm25.search_sync("the", 10_000) == []  # a stopword only: nothing matches, no padding
    everything = bm25.search_sync("the dog and the cat in a house", 10_000)  # k above the corpus
    assert 0 < len(everything) <= 300 and len({h.id for h in everything}) == len(everything)
    for query in (*WEIRD[:4], "dog " * 25_000, "?!."):
        hits = bm25.search_sync(query, 5)
        assert len(hits) <= 5 and len({h.id for h in hits}) == len(hits)
        assert all(h.score is not None and h.score > 0 for h in hits)
    assert len(bm25.search_sync(WEIRD[0], 5)) == 5  # "control", "red", ... match real passages
    with pytest.raises(InvalidInput, match="search_many takes a sequence"):
        bm25.search_many_sync("one string")  # type: ignore[arg-type]


def test_retriever_bad_corpora() -> None:
    with pytest.raises(InvalidInput, match="duplicate document ids"):
        BM25Retriever.from_documents([Document(id="a", text="one"), Document(id="a", text="two")])
    with pytest.raises(InvalidInput, match=r"none of the 2 documents has an indexable token"):
        BM25Retriever.from_documents([Document(id="a", text="?"), Document(id="b", text="")])
    odd = BM25Retriever.from_documents(
        [Document(id="s", text="broken \ud800 surrogate text"), Document(id="c", text="\x00 control text")]
    )
    assert {h.id for h in odd.search_sync("text", 5)} == {"s", "c"}
    assert BM25Retriever.from_documents([]).search_sync("anything", 3) == []


# ----------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    settings = ServerSettings(max_documents=50, max_document_chars=5_000, max_query_chars=500)
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def _rerank(c: httpx.Client, payload: dict[str, Any] | bytes) -> httpx.Response:
    if isinstance(payload, bytes):
        return c.post("/v1/rerank", content=payload, headers={"Content-Type": "application/json"})
    return c.post("/v1/rerank", json=payload)


def test_server_rerank_bad_input(client: httpx.Client) -> None:
    ok = {"query": "q", "documents": ["a", "b", "c"]}
    r = _rerank(client, {**ok, "documents": []})
    assert r.status_code == 200 and r.json()["results"] == []
    r = _rerank(client, {**ok, "documents": ["only one"]})
    assert r.status_code == 200 and [x["index"] for x in r.json()["results"]] == [0]
    # client ids may repeat: positions identify documents
    dup = [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]
    r = _rerank(client, {"query": "q", "documents": dup, "return_documents": True})
    assert r.status_code == 200 and sorted(x["index"] for x in r.json()["results"]) == [0, 1]
    r = _rerank(client, {**ok, "documents": ["", "", ""]})
    assert r.status_code == 200 and len(r.json()["results"]) == 3
    r = _rerank(client, {**ok, "documents": WEIRD[:1] + WEIRD[2:], "query": "\x00 q \u202e"})
    assert r.status_code == 200 and len(r.json()["results"]) == 4
    # a lone surrogate escaped in JSON: a defined answer, never a 500
    raw = b'{"query": "q \\ud800", "documents": ["a \\udfff", "b"]}'
    r = _rerank(client, raw)
    assert r.status_code in (200, 422), r.text
    r = _rerank(client, {**ok, "top_n": 10})
    assert r.status_code == 200 and len(r.json()["results"]) == 3
    for bad in (0, -1):
        r = _rerank(client, {**ok, "top_n": bad})
        assert r.status_code == 422 and r.json()["error"]["type"] in ("validation_error", "invalid_input")
    r = _rerank(client, {**ok, "query": "x" * 501})
    assert r.status_code == 422 and r.json()["error"]["details"]["limit"] == "max_query_chars"
    r = _rerank(client, {**ok, "query": "   "})
    assert r.status_code == 422 and "empty" in r.json()["error"]["message"]
    r = _rerank(client, {**ok, "documents": ["x" * 5_001]})
    assert r.status_code == 422 and r.json()["error"]["details"]["limit"] == "max_document_chars"
    r = _rerank(client, {**ok, "documents": ["d"] * 51})
    assert r.status_code == 422 and r.json()["error"]["details"]["limit"] == "max_documents"
    for broken in (b'{"query": "q", "documents": ["a", ', b"[]", b"\xff\xfe", b'{"query": 3}'):
        r = _rerank(client, broken)
        assert r.status_code == 422, (broken, r.status_code, r.text)
        assert r.json()["error"]["type"] == "validation_error"
