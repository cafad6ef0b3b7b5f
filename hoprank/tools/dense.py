"""Dense retrieval: sentence-transformers embeddings, exact inner-product search.

Documents (title + text) and queries are encoded into unit vectors, so the inner
product is the cosine similarity. Search is exact: a numpy matrix product for small
corpora, FAISS ``IndexFlatIP`` (``pip install 'hoprank[faiss]'``) when it is installed
and the corpus has at least ``faiss_threshold`` documents. Both compute the same
scores and rank ties by corpus order, so they give the same ranking (up to
floating-point ties).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hoprank._fsio import atomic_write
from hoprank.errors import ConfigError, InvalidInput, MissingExtra, RetrievalError
from hoprank.tools._topk import topk_indices
from hoprank.tools.corpus import check_unique_ids, finish_index, load_corpus, read_index
from hoprank.tools.embedder import DEFAULT_EMBEDDER, Embedder, ProgressCallback
from hoprank.tools.retriever import BaseRetriever
from hoprank.types import Document

__all__ = ["DenseRetriever", "SearchBackend", "resolve_embedder"]

logger = logging.getLogger(__name__)

SearchBackend = Literal["auto", "numpy", "faiss"]
_EMB_FILE = "embeddings.npy"


def resolve_embedder(embedder: Embedder | str | os.PathLike[str] | None) -> Embedder:
    """An :class:`Embedder` from an instance, a local folder, or ``None`` (the offline pack)."""
    return embedder if isinstance(embedder, Embedder) else Embedder(embedder)


def _unit(emb: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Rows scaled to unit length (zero rows stay zero)."""
    emb = np.asarray(emb, dtype=np.float32)
    if not emb.size:
        return emb
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norms == 0, 1.0, norms)


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class DenseRetriever(BaseRetriever):
    """Exact dense retrieval over normalised sentence-transformers embeddings.

    Build with :meth:`from_documents` / :meth:`from_jsonl` (encodes the corpus;
    ``show_progress=True`` draws a progress bar) or :meth:`from_embeddings`; persist
    with :meth:`save` / :meth:`load` (``embeddings.npy``, documents, manifest naming
    the embedder). :meth:`add` encodes and appends new documents.
    """

    name = "dense_search"
    description = (
        "Semantic search over the document collection using sentence embeddings. Good for "
        "paraphrased or descriptive queries. Returns the k most similar passages."
    )

    def __init__(
        self,
        embedder: Embedder | str | os.PathLike[str] | None = None,
        *,
        backend: SearchBackend = "auto",
        faiss_threshold: int = 20_000,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        if backend not in ("auto", "numpy", "faiss"):
            raise ConfigError(f"unknown dense search backend {backend!r}")
        if backend == "faiss" and not _faiss_available():
            raise MissingExtra("faiss", "faiss-cpu")
        self.embedder = resolve_embedder(embedder)
        self.backend: SearchBackend = backend
        self.faiss_threshold = faiss_threshold
        if name:
            self.name = name
        if description:
            self.description = description
        self._docs: list[Document] = []
        self._emb = np.zeros((0, 0), dtype=np.float32)
        self._faiss: Any = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_embeddings(
        cls,
        docs: Sequence[Document],
        embeddings: np.ndarray[Any, Any],
        embedder: Embedder | str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> DenseRetriever:
        """Wrap precomputed document embeddings (rows aligned with ``docs``; re-normalised)."""
        docs = list(docs)
        check_unique_ids(docs, where="documents")
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(docs):
            raise InvalidInput(f"embeddings must have shape (n_docs={len(docs)}, dim), got {emb.shape}")
        self = cls(embedder, **kwargs)
        self._set(docs, _unit(emb))
        return self

    @classmethod
    def from_documents(
        cls,
        docs: Sequence[Document],
        embedder: Embedder | str | os.PathLike[str] | None = None,
        *,
        show_progress: bool = False,
        progress: ProgressCallback | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> DenseRetriever:
        """Encode ``docs`` (blocking, CPU/GPU-bound) and index them."""
        docs = list(docs)
        check_unique_ids(docs, where="documents")
        self = cls(embedder, **kwargs)
        emb = self.embedder.encode(
            [d.full_text for d in docs], batch_size=batch_size, show_progress=show_progress, progress=progress
        )
        self._set(docs, _unit(emb))
        logger.info("dense: indexed %d documents with %s", len(docs), self.embedder.name)
        return self

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike[str], embedder: Any = None, **kwargs: Any) -> DenseRetriever:
        """Encode and index a JSONL corpus file."""
        return cls.from_documents(load_corpus(path), embedder, **kwargs)

    def _set(self, docs: list[Document], emb: np.ndarray[Any, Any]) -> None:
        self._docs = docs
        self._emb = np.ascontiguousarray(emb, dtype=np.float32)
        self._faiss = None
        if self.uses_faiss and len(docs):
            import faiss

            index = faiss.IndexFlatIP(self._emb.shape[1])
            index.add(self._emb)
            self._faiss = index

    def add(self, docs: Sequence[Document], *, show_progress: bool = False) -> None:
        """Encode ``docs`` and append them (ids must be new)."""
        new = list(docs)
        check_unique_ids([*self._docs, *new], where="index + new documents")
        emb = _unit(self.embedder.encode([d.full_text for d in new], show_progress=show_progress))
        all_emb = np.concatenate([self._emb, emb]) if self._emb.size else emb
        self._set([*self._docs, *new], all_emb)

    @property
    def uses_faiss(self) -> bool:
        """Whether searches go through FAISS (else numpy)."""
        if self.backend == "faiss":
            return True
        return self.backend == "auto" and len(self._docs) >= self.faiss_threshold and _faiss_available()

    @property
    def documents(self) -> list[Document]:
        return list(self._docs)

    @property
    def embeddings(self) -> np.ndarray[Any, Any]:
        """The ``(n, dim)`` unit-vector matrix (read-only view)."""
        view = self._emb.view()
        view.flags.writeable = False
        return view

    @property
    def corpus_size(self) -> int:
        return len(self._docs)

    def __len__(self) -> int:
        return len(self._docs)

    # ------------------------------------------------------------------ search
    def search_vectors(self, queries: np.ndarray[Any, Any], k: int) -> list[list[Document]]:
        """Top-``k`` documents for each (normalised) query vector; blocking."""
        k = min(k, len(self._docs))
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self._faiss is not None:
            scores, idx = self._faiss.search(q, k)
            out = []
            for srow, irow in zip(scores, idx, strict=True):
                keep = irow >= 0
                s, i = srow[keep], irow[keep]
                order = np.lexsort((i, -s))
                out.append([self._docs[int(i[j])].with_score(float(s[j])) for j in order])
            return out
        sims = q @ self._emb.T
        res = []
        for row in sims:
            top = topk_indices(row, k)
            res.append([self._docs[int(i)].with_score(float(row[i])) for i in top])
        return res

    def _search_blocking(self, queries: list[str], k: int) -> list[list[Document]]:
        if not self._docs:
            raise RetrievalError("DenseRetriever has no documents")
        return self.search_vectors(self.embedder.encode(queries), k)

    async def _search(self, query: str, k: int) -> list[Document]:
        return (await asyncio.to_thread(self._search_blocking, [query], k))[0]

    async def _search_batch(self, queries: list[str], k: int) -> list[list[Document]]:
        return await asyncio.to_thread(self._search_blocking, queries, k)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``embeddings.npy``, ``docs.jsonl`` and the manifest (last) to ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / _EMB_FILE, "wb") as f:
            np.save(f, self._emb, allow_pickle=False)
        return finish_index(
            out,
            "dense",
            self._docs,
            dim=int(self._emb.shape[1]) if self._emb.ndim == 2 else 0,
            normalized=True,
            embedder=self.embedder.describe(),
            name=self.name,
        )

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike[str],
        embedder: Embedder | str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> DenseRetriever:
        """Load an index written by :meth:`save`.

        The query embedder is ``embedder`` if given, else the model recorded in the
        manifest (its folder, or the offline pack when it was the default model).
        """
        src, m, docs = read_index(folder, "dense")
        if embedder is None:
            info = m.get("embedder") or {}
            path = info.get("path")
            if path and Path(path).is_dir():
                embedder = Embedder(path, dtype=info.get("dtype", "float32"))
            elif info.get("name") == DEFAULT_EMBEDDER:
                embedder = Embedder(None, dtype=info.get("dtype", "float32"))
            else:
                raise ConfigError(
                    f"{src}: the index was built with embedder {info!r}, which is not available "
                    "here; pass embedder= explicitly"
                )
        try:
            emb = np.load(src / _EMB_FILE, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise RetrievalError(f"{src}: cannot read {_EMB_FILE}: {e}") from e
        if emb.shape[0] != len(docs):
            raise RetrievalError(f"{src}: {emb.shape[0]} embeddings for {len(docs)} documents")
        kwargs.setdefault("name", m.get("name"))
        self = cls(embedder, **kwargs)
        self._set(docs, emb)  # saved vectors are unit already: kept bit-exact
        return self
