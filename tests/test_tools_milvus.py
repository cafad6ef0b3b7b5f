"""MilvusRetriever on Milvus Lite (a local .db file): idempotent re-indexing, full-text
BM25 search on real HotpotQA paragraphs, and typed errors.

Dense agreement with DenseRetriever (real embeddings) is tested in test_tools_dense.py.
Here the stored vectors are seeded random unit vectors: upsert/count/BM25 behaviour does
not depend on them, and it saves encoding time on 2 CPU cores.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hoprank.errors import ConfigError, InvalidInput, MissingExtra, RetrievalError
from hoprank.tools import BM25Retriever, load_corpus
from hoprank.types import Document

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from hoprank.tools import MilvusRetriever

HOTPOT = "hotpotqa-dev-distractor-500"
N_DOCS = 300


@pytest.fixture(scope="module")
def docs(datasets_dir: Path) -> list[Document]:
    return load_corpus(datasets_dir / HOTPOT / "corpus.jsonl", limit=N_DOCS)


@pytest.fixture(scope="module")
def questions(datasets_dir: Path, docs: list[Document]) -> list[dict[str, Any]]:
    ids = {d.id for d in docs}
    with (datasets_dir / HOTPOT / "queries.jsonl").open(encoding="utf-8") as f:
        qs = [json.loads(line) for line in f]
    return [q for q in qs if set(q["candidates"]) <= ids]


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray[Any, Any]:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def milvus(docs: list[Document], tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusRetriever]:
    db = tmp_path_factory.mktemp("milvus") / "lite.db"
    m = MilvusRetriever(db, "hotpot_bm25", mode="bm25")
    m.index(docs, embeddings=_vectors(len(docs)))
    yield m
    m.close()


def test_reindex_adds_no_duplicates(milvus: MilvusRetriever, docs: list[Document]) -> None:
    assert milvus.count() == N_DOCS
    milvus.index(docs, embeddings=_vectors(len(docs)))  # same ids again
    milvus.index(docs[:50], embeddings=_vectors(50, seed=1))
    assert milvus.count() == N_DOCS


async def test_upsert_replaces_content(docs: list[Document], tmp_path: Path) -> None:
    with MilvusRetriever(tmp_path / "u.db", "c", mode="bm25") as m:
        m.index(docs[:20], embeddings=_vectors(20))
        changed = docs[3].model_copy(update={"text": "zyzzyva aardwolf quokka", "metadata": {"v": 2}})
        m.index([changed], embeddings=_vectors(1))
        assert m.count() == 20
        hits = await m.search("quokka zyzzyva", k=3)
        assert hits[0].id == docs[3].id and hits[0].text == "zyzzyva aardwolf quokka"
        assert hits[0].metadata["v"] == 2 and hits[0].metadata["rank"] == 1


async def test_bm25_full_text_finds_supporting(
    milvus: MilvusRetriever, questions: list[dict[str, Any]]
) -> None:
    assert questions, "no question has its whole candidate pool in the first 300 paragraphs"
    q = questions[0]
    hits = await milvus.search(q["text"], k=5)
    assert set(q["supporting"]) & {d.id for d in hits}
    scores = [d.score or 0.0 for d in hits]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert hits[0].title and hits[0].metadata["rank"] == 1


async def test_bm25_full_text_close_to_bm25s(
    milvus: MilvusRetriever, docs: list[Document], questions: list[dict[str, Any]]
) -> None:
    """Milvus' analyser (no stemming) and bm25s without stemming/stopwords mostly agree on top 1."""
    ref = BM25Retriever.from_documents(docs, stemmer=None, stopwords=None, k1=1.2, b=0.75)
    texts = [q["text"] for q in questions]
    a, b = await milvus.search_many(texts, k=1), await ref.search_many(texts, k=1)
    agree = sum(x[0].id == y[0].id for x, y in zip(a, b, strict=True))
    assert agree / len(texts) >= 0.8, f"top-1 agreement {agree}/{len(texts)}"


async def test_k_and_query_validation(milvus: MilvusRetriever) -> None:
    # Full-text search returns only documents sharing a term with the query (all scored > 0).
    hits = await milvus.search("Shirley Temple", k=1000)
    assert 0 < len(hits) < N_DOCS and all((d.score or 0) > 0 for d in hits)
    with pytest.raises(InvalidInput):
        await milvus.search("  ", k=3)
    with pytest.raises(InvalidInput):
        await milvus.search("x", k=0)
    tool = milvus.as_tool()["function"]
    assert tool["name"] == "milvus_bm25_search"


async def test_reopen_existing_collection(milvus: MilvusRetriever) -> None:
    # A second client on the same .db file sees the same collection.
    other = MilvusRetriever(milvus.uri, "hotpot_bm25", mode="bm25")
    assert other.count() == N_DOCS
    assert [d.id for d in await other.search("Shirley Temple", 3)] == [
        d.id for d in await milvus.search("Shirley Temple", 3)
    ]


async def test_errors(docs: list[Document], tmp_path: Path) -> None:
    with MilvusRetriever(tmp_path / "e.db", "nobm25", bm25=False) as m:
        with pytest.raises(RetrievalError, match="does not exist"):
            await m.search("anything", k=3)
        m.index(docs[:5], embeddings=_vectors(5))
        with pytest.raises(InvalidInput, match="shape"):
            m.index(docs[:5], embeddings=_vectors(4))
        with pytest.raises(InvalidInput, match="duplicate"):
            m.index([docs[0], docs[0]], embeddings=_vectors(2))
        too_long = Document(id="big", text="x" * 70_000)
        with pytest.raises(InvalidInput, match="65535-byte"):
            m.index([too_long], embeddings=_vectors(1))
    with pytest.raises(ConfigError, match="no BM25 function"):
        MilvusRetriever(tmp_path / "e.db", "nobm25", mode="bm25")
    with pytest.raises(ConfigError):
        MilvusRetriever(tmp_path / "e.db", "x", mode="bm25", bm25=False)
    with pytest.raises(ConfigError, match="mode"):
        MilvusRetriever(tmp_path / "e.db", "x", mode="sparse")
    with pytest.raises(ConfigError, match="no_such_option"):
        MilvusRetriever(tmp_path / "e.db", "x", no_such_option=1)


def test_config_object_and_keywords_agree(tmp_path: Path) -> None:
    from hoprank.tools import MilvusConfig

    config = MilvusConfig(mode="bm25", insert_batch_size=7, name="wiki")
    with MilvusRetriever(tmp_path / "c.db", "c", config=config) as a:
        assert (a.mode, a.bm25, a.insert_batch_size, a.name) == ("bm25", True, 7, "wiki")
    with MilvusRetriever(tmp_path / "c.db", "c", mode="bm25", insert_batch_size=7, name="wiki") as b:
        assert b.config == config
    with MilvusRetriever(tmp_path / "c.db", "c", config=config, name="other") as c:  # keywords win
        assert c.name == "other" and c.insert_batch_size == 7


def test_missing_pymilvus_is_missing_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # import pymilvus -> ImportError
    with pytest.raises(MissingExtra, match=r"hoprank\[milvus\]"):
        MilvusRetriever(tmp_path / "m.db")
