"""Reciprocal rank fusion: hand-checked arithmetic, weights, dedupe, errors; and a
HybridRetriever over two real BM25 configurations of the HotpotQA corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hoprank.errors import InvalidInput
from hoprank.tools import BM25Retriever, HybridRetriever, load_corpus, rrf_fuse
from hoprank.types import Document

HOTPOT = "hotpotqa-dev-distractor-500"


def _docs(*ids: str) -> list[Document]:
    return [Document(id=i, text=f"text of {i}") for i in ids]


def test_rrf_hand_checked() -> None:
    # list 1: a b c ; list 2: c a d ; k = 60
    #   a: 1/61 + 1/62 = 0.0325224...   c: 1/63 + 1/61 = 0.0322664...
    #   b: 1/62        = 0.0161290...   d: 1/63        = 0.0158730...
    fused = rrf_fuse([_docs("a", "b", "c"), _docs("c", "a", "d")])
    assert [d.id for d in fused] == ["a", "c", "b", "d"]
    expected = [1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62, 1 / 63]
    assert [d.score for d in fused] == pytest.approx(expected, abs=1e-15)
    assert [d.metadata["rank"] for d in fused] == [1, 2, 3, 4]
    assert fused[0].metadata["rrf_ranks"] == [1, 2]
    assert fused[2].metadata["rrf_ranks"] == [2, None]


def test_rrf_small_k_and_weights() -> None:
    # k = 0, weights 2 and 1: a = 2/1 + 1/3 = 2.333, b = 2/2 = 1.0, c = 1/1 = 1.0, d = 1/2 = 0.5
    fused = rrf_fuse([_docs("a", "b"), _docs("c", "d", "a")], k=0, weights=[2.0, 1.0])
    assert [(d.id, round(d.score or 0, 6)) for d in fused] == [
        ("a", 2.333333),
        ("b", 1.0),
        ("c", 1.0),
        ("d", 0.5),
    ]
    # b and c tie: first-seen order (list 1 before list 2) decides.
    zero = rrf_fuse([_docs("a", "b"), _docs("b", "a")], weights=[0.0, 1.0])
    assert [d.id for d in zero] == ["b", "a"]


def test_rrf_dedupes_within_and_across_lists() -> None:
    fused = rrf_fuse([_docs("a", "a", "b"), _docs("b")])
    # the repeated "a" counts once, at rank 1; "b" is rank 3 in list 1 (position counts)
    assert [d.id for d in fused] == ["b", "a"]
    assert fused[0].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 61)
    assert len({d.id for d in fused}) == len(fused)


def test_rrf_keeps_first_copy_and_handles_empty() -> None:
    first = Document(id="x", text="from list one", title="T", metadata={"source": 1})
    second = Document(id="x", text="from list two")
    fused = rrf_fuse([[first], [second]])
    assert fused[0].text == "from list one" and fused[0].metadata["source"] == 1
    assert rrf_fuse([]) == [] and rrf_fuse([[], []]) == []


def test_rrf_input_errors() -> None:
    with pytest.raises(InvalidInput, match="weights"):
        rrf_fuse([_docs("a"), _docs("b")], weights=[1.0])
    with pytest.raises(InvalidInput):
        rrf_fuse([_docs("a")], weights=[-1.0])
    with pytest.raises(InvalidInput):
        rrf_fuse([_docs("a")], k=-5)


@pytest.fixture(scope="module")
def hotpot(datasets_dir: Path) -> tuple[list[Document], list[dict[str, object]]]:
    docs = load_corpus(datasets_dir / HOTPOT / "corpus.jsonl", limit=600)
    with (datasets_dir / HOTPOT / "queries.jsonl").open(encoding="utf-8") as f:
        queries = [json.loads(line) for line in f][:60]
    return docs, queries


async def test_hybrid_equals_rrf_of_components(
    hotpot: tuple[list[Document], list[dict[str, object]]],
) -> None:
    docs, queries = hotpot
    stemmed = BM25Retriever.from_documents(docs, name="stemmed")
    plain = BM25Retriever.from_documents(docs, stemmer=None, stopwords=None, name="plain")
    hybrid = HybridRetriever([stemmed, plain], depth=30)
    q = str(queries[5]["text"])
    got = await hybrid.search(q, k=10)
    want = rrf_fuse([await stemmed.search(q, 30), await plain.search(q, 30)])[:10]
    assert [(d.id, d.score) for d in got] == [(d.id, d.score) for d in want]
    assert set(got[0].metadata["rrf_ranks"]) == {"stemmed", "plain"}
    assert [d.metadata["rank"] for d in got] == list(range(1, 11))
    many = await hybrid.search_many([str(x["text"]) for x in queries[:8]], k=10)
    assert [d.id for d in many[5]] == [d.id for d in got]
    assert hybrid.corpus_size == 600
    # every document either component matched, once; none that neither matched (no padding)
    matched = {d.id for d in await stemmed.search(q, 5000)} | {d.id for d in await plain.search(q, 5000)}
    everything = await hybrid.search(q, k=5000)
    assert len(everything) == len(matched) and {d.id for d in everything} == matched


def test_hybrid_config_errors(hotpot: tuple[list[Document], list[dict[str, object]]]) -> None:
    bm = BM25Retriever.from_documents(hotpot[0][:10])
    with pytest.raises(InvalidInput):
        HybridRetriever([])
    with pytest.raises(InvalidInput):
        HybridRetriever([bm], weights=[1.0, 2.0])
    with pytest.raises(InvalidInput):
        HybridRetriever([bm], depth=0)
