"""BM25 retrieval on `bm25s <https://github.com/xhluca/bm25s>`_ (sparse, in process).

The index covers each document's title and text (``Document.full_text``), tokenised by
bm25s (lower-cased words, optional stopword removal and PyStemmer stemming). Scoring
and top-k run in a worker thread. Ties are broken by corpus order, so a saved and
reloaded index returns exactly the same ranking. A search returns only documents that
share a term with the query, so it may return fewer than ``k`` (none for a query of
stopwords only), as Milvus full-text search does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hoprank.errors import InvalidInput, RetrievalError
from hoprank.tools._topk import topk_indices
from hoprank.tools.corpus import check_unique_ids, finish_index, load_corpus, read_index
from hoprank.tools.retriever import BaseRetriever
from hoprank.types import Document

__all__ = ["BM25Method", "BM25Retriever"]

logger = logging.getLogger(__name__)

BM25Method = Literal["lucene", "robertson", "atire", "bm25l", "bm25+"]
_BM25S_DIR = "bm25s"


class BM25Retriever(BaseRetriever):
    """BM25 over title + text, built on ``bm25s``.

    Build with :meth:`from_documents` or :meth:`from_jsonl`; persist with :meth:`save`
    and :meth:`load` (the bm25s index files, the document store and a manifest).

    ``add`` re-indexes: bm25s has no incremental update (its index is a CSC matrix of
    precomputed scores whose IDF depends on every document), so adding documents
    rebuilds the whole index transparently from the stored documents.
    """

    name = "bm25_search"
    description = (
        "Keyword search (BM25) over the document collection. Best for names, titles, "
        "rare words and exact phrases. Returns the k most relevant passages."
    )

    def __init__(
        self,
        *,
        stemmer: str | None = "english",
        stopwords: str | list[str] | None = "en",
        k1: float = 1.5,
        b: float = 0.75,
        method: BM25Method = "lucene",
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        if method not in ("lucene", "robertson", "atire", "bm25l", "bm25+"):
            raise InvalidInput(f"unknown BM25 method {method!r}")
        if k1 < 0 or not 0 <= b <= 1:
            raise InvalidInput(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.stemmer_name = stemmer
        self.stopwords = stopwords
        self.k1 = k1
        self.b = b
        self.method: BM25Method = method
        if name:
            self.name = name
        if description:
            self.description = description
        self._docs: list[Document] = []
        self._bm25: Any = None
        self._stemmer: Any = self._make_stemmer(stemmer)
        self._lock = threading.Lock()  # PyStemmer objects are not thread-safe

    # ------------------------------------------------------------------ building
    @staticmethod
    def _make_stemmer(language: str | None) -> Any:
        if language is None:
            return None
        import Stemmer

        try:
            return Stemmer.Stemmer(language)
        except KeyError as e:
            raise InvalidInput(f"PyStemmer has no stemmer for {language!r}") from e

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        import bm25s

        with self._lock:
            tokens: list[list[str]] = bm25s.tokenize(
                texts,
                stopwords=self.stopwords,
                stemmer=self._stemmer,
                return_ids=False,
                show_progress=False,
            )
        return tokens

    def _build(self, docs: list[Document]) -> None:
        import bm25s

        bm25 = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        if docs:
            tokens = self._tokenize([d.full_text for d in docs])
            if not any(tokens):  # bm25s fails on an empty vocabulary with a bare ValueError
                raise InvalidInput(
                    f"none of the {len(docs)} documents has an indexable token (texts are empty "
                    "or only stopwords, punctuation or single characters): nothing to index"
                )
            bm25.index(tokens, show_progress=False)
        self._bm25 = bm25
        self._docs = docs

    @classmethod
    def from_documents(cls, docs: Sequence[Document], **kwargs: Any) -> BM25Retriever:
        """Index ``docs`` (unique ids required; blocking, CPU-bound); ``kwargs``: the
        constructor's (``stemmer``, ``stopwords``, ``k1``, ``b``, ``method``, ``name``,
        ``description``)."""
        docs = list(docs)
        check_unique_ids(docs, where="documents")
        self = cls(**kwargs)
        self._build(docs)
        logger.info("bm25: indexed %d documents", len(docs))
        return self

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike[str], **kwargs: Any) -> BM25Retriever:
        """Index a JSONL corpus file (see :func:`hoprank.tools.corpus.load_corpus`)."""
        return cls.from_documents(load_corpus(path), **kwargs)

    def add(self, docs: Sequence[Document]) -> None:
        """Add documents by rebuilding the index (bm25s cannot update incrementally)."""
        new = list(docs)
        check_unique_ids([*self._docs, *new], where="index + new documents")
        self._build([*self._docs, *new])
        logger.info("bm25: rebuilt index with %d documents (+%d)", len(self._docs), len(new))

    @property
    def documents(self) -> list[Document]:
        """The indexed documents, in index order."""
        return list(self._docs)

    @property
    def corpus_size(self) -> int:
        return len(self._docs)

    def __len__(self) -> int:
        return len(self._docs)

    # ------------------------------------------------------------------ search
    def _search_blocking(self, queries: list[str], k: int) -> list[list[Document]]:
        if self._bm25 is None:
            raise RetrievalError("BM25Retriever has no index: build it with from_documents() or load()")
        out = []
        for toks in self._tokenize(queries):
            # A query with no indexable token (only stopwords/punctuation) matches nothing.
            scores = self._bm25.get_scores(toks) if toks else np.zeros(len(self._docs), dtype=np.float32)
            idx = topk_indices(scores, k)
            # Only documents that share a term with the query (score > 0; bm25s' idf is
            # positive): padding with non-matches would hand RRF fusion arbitrary ranks.
            out.append([self._docs[i].with_score(float(scores[i])) for i in idx if scores[i] > 0])
        return out

    async def _search(self, query: str, k: int) -> list[Document]:
        return (await asyncio.to_thread(self._search_blocking, [query], k))[0]

    async def _search_batch(self, queries: list[str], k: int) -> list[list[Document]]:
        return await asyncio.to_thread(self._search_blocking, queries, k)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the index to ``folder`` (bm25s files, ``docs.jsonl``, manifest last)."""
        if self._bm25 is None:
            raise RetrievalError("nothing to save: the BM25 index is not built")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        if self._docs:
            self._bm25.save(str(out / _BM25S_DIR), show_progress=False)
        return finish_index(
            out,
            "bm25",
            self._docs,
            engine="bm25s",
            stemmer=self.stemmer_name,
            stopwords=self.stopwords,
            k1=self.k1,
            b=self.b,
            method=self.method,
            name=self.name,
        )

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> BM25Retriever:
        """Load an index written by :meth:`save`."""
        import bm25s

        src, m, docs = read_index(folder, "bm25")
        self = cls(
            stemmer=m.get("stemmer"),
            stopwords=m.get("stopwords"),
            k1=float(m.get("k1", 1.5)),
            b=float(m.get("b", 0.75)),
            method=m.get("method", "lucene"),
            name=m.get("name"),
        )
        if docs:
            try:
                bm25 = bm25s.BM25.load(str(src / _BM25S_DIR), show_progress=False, verbosity=0)
            except (OSError, ValueError, KeyError) as e:
                raise RetrievalError(f"{src}: cannot load the bm25s index: {e}") from e
            if int(bm25.scores["num_docs"]) != len(docs):
                raise RetrievalError(
                    f"{src}: bm25s index holds {bm25.scores['num_docs']} documents, expected {len(docs)}"
                )
            self._bm25, self._docs = bm25, docs
        else:
            self._build([])
        return self
