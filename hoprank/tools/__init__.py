"""hoprank.tools: retrievers the agent calls as tools.

``BM25Retriever`` (bm25s), ``DenseRetriever`` (sentence-transformers + numpy/FAISS),
``HybridRetriever`` / ``rrf_fuse`` (reciprocal rank fusion), ``RunRetriever`` (TREC run
files), ``MilvusRetriever`` (Milvus / Milvus Lite). All share :class:`BaseRetriever`:
async ``search``, sync facade, bounded ``search_many`` and an OpenAI-format tool.
Heavy dependencies (bm25s, sentence-transformers, faiss, pymilvus) load on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

from hoprank.errors import RetrievalError
from hoprank.runs import read_run, rrf_fuse
from hoprank.tools.base import Retriever
from hoprank.tools.bm25 import BM25Retriever
from hoprank.tools.corpus import check_unique_ids, load_corpus, load_queries, read_manifest
from hoprank.tools.dense import DenseRetriever
from hoprank.tools.embedder import Embedder
from hoprank.tools.hybrid import HybridRetriever
from hoprank.tools.milvus import MilvusConfig, MilvusRetriever
from hoprank.tools.retriever import BaseRetriever, SearchArgs, format_documents
from hoprank.tools.run import RunRetriever

__all__ = [
    "BM25Retriever",
    "BaseRetriever",
    "DenseRetriever",
    "Embedder",
    "HybridRetriever",
    "MilvusConfig",
    "MilvusRetriever",
    "Retriever",
    "RunRetriever",
    "SearchArgs",
    "check_unique_ids",
    "format_documents",
    "load_corpus",
    "load_index",
    "load_queries",
    "read_run",
    "rrf_fuse",
]


def load_index(folder: str | os.PathLike[str]) -> BaseRetriever:
    """Load any index folder written by ``save()`` or ``hoprank index`` (by its manifest kind)."""
    manifest = read_manifest(folder)
    kind = manifest.get("kind")
    if kind == "bm25":
        return BM25Retriever.load(folder)
    if kind == "dense":
        return DenseRetriever.load(folder)
    if kind == "milvus":
        info = manifest.get("embedder") or {}
        path = info.get("path")
        embedder = Embedder(path if path and Path(path).is_dir() else info.get("name"))
        return MilvusRetriever(str(Path(folder) / manifest["db"]), manifest["collection"], embedder=embedder)
    raise RetrievalError(f"{folder}: unknown index kind {kind!r}")
