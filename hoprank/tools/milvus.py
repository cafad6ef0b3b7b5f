"""Milvus retrieval through ``pymilvus.MilvusClient`` (``pip install 'hoprank[milvus]'``).

The same code serves a Milvus server (``uri="http://host:19530"``) and the embedded
Milvus Lite (``uri`` ending in ``.db``: a local file, package ``milvus-lite``).

Collection layout: ``id`` (VARCHAR primary key), ``title``, ``text``, ``content``
(title + text, the analysed field for full-text search), ``metadata`` (JSON),
``vector`` (FLOAT_VECTOR, FLAT index, IP metric on unit vectors = cosine) and, with
``bm25=True``, ``sparse`` (SPARSE_FLOAT_VECTOR produced by a BM25 ``Function`` on
``content``). Indexing upserts by id in batches, so re-indexing the same documents
adds no duplicates.

Full-text BM25 (``mode="bm25"``) needs an engine with BM25 functions (Milvus >= 2.5;
Milvus Lite 3.x has them — checked with milvus-lite 3.2.2). An engine without them
raises :class:`~hoprank.errors.CapabilityMissing` when the collection is created.
Full-text search returns only documents that share a term with the query, so it may
return fewer than ``k`` (dense search returns ``min(k, count)``). Dense search uses the same :class:`~hoprank.tools.embedder.Embedder` as
:class:`~hoprank.tools.dense.DenseRetriever` and returns the same ranking (up to
floating-point ties).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hoprank.errors import CapabilityMissing, ConfigError, InvalidInput, MissingExtra, RetrievalError
from hoprank.tools.corpus import check_unique_ids
from hoprank.tools.embedder import Embedder, ProgressCallback
from hoprank.tools.retriever import BaseRetriever
from hoprank.types import Document

__all__ = ["MilvusConfig", "MilvusMode", "MilvusRetriever"]

logger = logging.getLogger(__name__)

MilvusMode = Literal["dense", "bm25"]
_MAX_VARCHAR = 65_535
_MAX_ID = 512
_MAX_TOPK = 16_384  # Milvus' largest search limit
_OUT_FIELDS = ["title", "text", "metadata"]


def _engine_version(uri: str) -> str:
    pkg = "milvus-lite" if uri.endswith(".db") else "pymilvus"
    try:
        return f"{pkg} {importlib_metadata.version(pkg)}"
    except importlib_metadata.PackageNotFoundError:
        return pkg


class MilvusConfig(BaseModel):
    """The options of :class:`MilvusRetriever` (all but the ``uri`` and the collection),
    validated once.

    ``embedder``: an :class:`~hoprank.tools.embedder.Embedder`, a local model folder, or
    None (the offline default; created on first use). ``mode``: ``"dense"`` (embed the
    query, IP search) or ``"bm25"`` (full-text). ``bm25``: create the BM25 function and
    sparse field when creating the collection. ``token``: the server's token.
    ``insert_batch_size``: rows per upsert. ``name``/``description``: the tool's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    embedder: Any = None
    mode: MilvusMode = "dense"
    bm25: bool = True
    token: str | None = None
    insert_batch_size: int = Field(default=256, ge=1)
    name: str | None = None
    description: str | None = None

    @classmethod
    def build(cls, config: MilvusConfig | None, options: dict[str, Any]) -> MilvusConfig:
        """``config`` updated with ``options``; :class:`ConfigError` on unknown or bad ones."""
        try:
            out = cls(**{**(dict(config) if config is not None else {}), **options})
        except ValidationError as e:
            raise ConfigError(f"MilvusRetriever: {e}") from e
        if out.mode == "bm25" and not out.bm25:
            raise ConfigError("mode='bm25' needs bm25=True (the BM25 function on the collection)")
        return out


class MilvusRetriever(BaseRetriever):
    """Dense (or BM25 full-text) search over a Milvus / Milvus Lite collection.

    ``uri``: a ``.db`` path (Milvus Lite, created on demand) or a server URL;
    ``collection``: the collection's name. The options (:class:`MilvusConfig`: ``mode``,
    ``bm25``, ``embedder``...) come as keywords or as one ``config=``.
    Call :meth:`index` to add documents; :meth:`close` releases the connection.
    """

    name = "milvus_search"
    description = (
        "Semantic search over the document collection stored in Milvus. Returns the k most relevant passages."
    )

    def __init__(
        self,
        uri: str | os.PathLike[str] = "hoprank_milvus.db",
        collection: str = "hoprank",
        *,
        config: MilvusConfig | None = None,
        **options: Any,
    ) -> None:
        """``options``: the fields of :class:`MilvusConfig` (or a ready ``config``)."""
        try:
            import pymilvus
        except ImportError as e:
            raise MissingExtra("milvus", "pymilvus") from e
        cfg = MilvusConfig.build(config, options)
        embedder, mode = cfg.embedder, cfg.mode
        uri_s = str(uri)
        if uri_s.endswith(".db"):
            Path(uri_s).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            uri_s = str(Path(uri_s).expanduser().resolve())
        self.config = cfg
        self.uri = uri_s
        self.collection = collection
        self.mode: MilvusMode = mode
        self.bm25 = cfg.bm25
        self.insert_batch_size = cfg.insert_batch_size
        self._embedder_arg = embedder
        self._embedder: Embedder | None = embedder if isinstance(embedder, Embedder) else None
        if cfg.name:
            self.name = cfg.name
        elif mode == "bm25":
            self.name = "milvus_bm25_search"
        if cfg.description:
            self.description = cfg.description
        self._lock = threading.Lock()
        try:
            self._client: Any = pymilvus.MilvusClient(uri=uri_s, token=cfg.token or "")
        except Exception as e:  # pymilvus raises MilvusException and plain errors alike
            raise RetrievalError(f"cannot connect to Milvus at {uri_s}: {e}") from e
        self._count = -1
        if self._client.has_collection(collection):
            self._client.load_collection(collection)
            self._check_existing()
            self._count = self._fetch_count()

    # ------------------------------------------------------------------ collection
    @property
    def embedder(self) -> Embedder:
        """The query/document embedder (created lazily from the ``embedder`` argument)."""
        if self._embedder is None:
            from hoprank.tools.dense import resolve_embedder

            self._embedder = resolve_embedder(self._embedder_arg)
        return self._embedder

    def _field_names(self) -> set[str]:
        info = self._client.describe_collection(self.collection)
        return {f["name"] for f in info.get("fields", [])}

    def _check_existing(self) -> None:
        fields = self._field_names()
        if not {"id", "vector", "text"} <= fields:
            raise RetrievalError(
                f"Milvus collection {self.collection!r} was not created by hoprank: {sorted(fields)}"
            )
        if self.mode == "bm25" and "sparse" not in fields:
            raise ConfigError(
                f"collection {self.collection!r} has no BM25 function; re-create it with bm25=True to search in bm25 mode"
            )

    def _create(self, dim: int) -> None:
        from pymilvus import DataType

        c = self._client
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=_MAX_ID)
        schema.add_field("title", DataType.VARCHAR, max_length=_MAX_VARCHAR)
        schema.add_field("text", DataType.VARCHAR, max_length=_MAX_VARCHAR)
        schema.add_field("content", DataType.VARCHAR, max_length=_MAX_VARCHAR, enable_analyzer=self.bm25)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = c.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        if self.bm25:
            engine = _engine_version(self.uri)
            try:
                from pymilvus import Function, FunctionType
            except ImportError as e:
                raise CapabilityMissing(
                    "BM25 full-text search", engine, "pymilvus has no Function API"
                ) from e
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="content_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["content"],
                    output_field_names=["sparse"],
                )
            )
            index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
            try:
                c.create_collection(self.collection, schema=schema, index_params=index)
            except Exception as e:
                raise CapabilityMissing(
                    "BM25 full-text search",
                    engine,
                    f"this engine version does not support BM25 functions ({e}); use bm25=False "
                    "or hoprank.tools.BM25Retriever",
                ) from e
        else:
            c.create_collection(self.collection, schema=schema, index_params=index)
        c.load_collection(self.collection)
        logger.info(
            "milvus: created collection %r at %s (dim=%d, bm25=%s)", self.collection, self.uri, dim, self.bm25
        )

    def _fetch_count(self) -> int:
        res = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def count(self) -> int:
        """Number of documents in the collection (asks the engine)."""
        with self._lock:
            if not self._client.has_collection(self.collection):
                return 0
            self._count = self._fetch_count()
            return self._count

    # corpus_size stays None: another client may write to the collection, and Milvus
    # itself returns min(k, count) hits. count() asks the engine for the exact number.

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        with self._lock:
            if self._client.has_collection(self.collection):
                self._client.drop_collection(self.collection)
            self._count = 0

    def close(self) -> None:
        """Release the client connection."""
        with self._lock:
            self._client.close()

    def __enter__(self) -> MilvusRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ indexing
    @staticmethod
    def _row(doc: Document, vec: np.ndarray[Any, Any]) -> dict[str, Any]:
        fields = {"id": doc.id, "title": doc.title or "", "text": doc.text, "content": doc.full_text}
        for key, value in fields.items():
            limit = _MAX_ID if key == "id" else _MAX_VARCHAR
            if len(value.encode("utf-8")) > limit:
                raise InvalidInput(
                    f"document {doc.id[:80]!r}: field {key!r} exceeds Milvus' {limit}-byte limit"
                )
        return {**fields, "metadata": doc.metadata, "vector": vec.astype(np.float32).tolist()}

    def index(
        self,
        docs: Sequence[Document],
        *,
        embeddings: np.ndarray[Any, Any] | None = None,
        show_progress: bool = False,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Upsert ``docs`` (blocking): embeds them (or uses ``embeddings``, rows aligned
        with ``docs``), creates the collection on first use, writes in batches.
        Re-indexing a document id replaces it. Returns the number of documents written."""
        docs = list(docs)
        check_unique_ids(docs, where="documents")
        if not docs:
            return 0
        if embeddings is None:
            emb = self.embedder.encode(
                [d.full_text for d in docs], show_progress=show_progress, progress=progress
            )
        else:
            emb = np.asarray(embeddings, dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(docs):
                raise InvalidInput(f"embeddings must have shape ({len(docs)}, dim), got {emb.shape}")
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            emb = emb / np.where(norms == 0, 1.0, norms)
        rows = [self._row(d, v) for d, v in zip(docs, emb, strict=True)]
        with self._lock:
            if not self._client.has_collection(self.collection):
                self._create(int(emb.shape[1]))
            for start in range(0, len(rows), self.insert_batch_size):
                self._client.upsert(self.collection, rows[start : start + self.insert_batch_size])
            self._count = self._fetch_count()
        logger.info("milvus: upserted %d documents into %r (now %d)", len(rows), self.collection, self._count)
        return len(rows)

    async def aindex(
        self, docs: Sequence[Document], *, embeddings: np.ndarray[Any, Any] | None = None
    ) -> int:
        """:meth:`index` in a worker thread."""
        return await asyncio.to_thread(self.index, docs, embeddings=embeddings)

    @classmethod
    def from_documents(
        cls,
        docs: Sequence[Document],
        uri: str | os.PathLike[str] = "hoprank_milvus.db",
        collection: str = "hoprank",
        *,
        embeddings: np.ndarray[Any, Any] | None = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> MilvusRetriever:
        """Connect, then :meth:`index` ``docs`` (upsert: safe to run again)."""
        self = cls(uri, collection, **kwargs)
        self.index(docs, embeddings=embeddings, show_progress=show_progress)
        return self

    # ------------------------------------------------------------------ search
    def _hits_to_docs(self, hits: Sequence[Any]) -> list[Document]:
        out = []
        for h in hits:
            ent = h.get("entity", {})
            dist = float(h["distance"])
            # BM25 scores are >= 0; Milvus Lite reports them negated (best = most negative).
            score = abs(dist) if self.mode == "bm25" else dist
            out.append(
                Document(
                    id=str(h["id"]),
                    title=ent.get("title") or None,
                    text=ent.get("text", ""),
                    metadata=dict(ent.get("metadata") or {}),
                    score=score,
                )
            )
        return out

    def _search_blocking(self, queries: list[str], k: int) -> list[list[Document]]:
        if self._count < 0 and not self._client.has_collection(self.collection):
            raise RetrievalError(
                f"Milvus collection {self.collection!r} does not exist: index documents first"
            )
        if self.mode == "dense":
            data: list[Any] = self.embedder.encode(queries).tolist()
            anns, params = "vector", {"metric_type": "IP"}
        else:
            data, anns, params = list(queries), "sparse", {"metric_type": "BM25"}
        with self._lock:
            try:
                res = self._client.search(
                    self.collection,
                    data=data,
                    anns_field=anns,
                    limit=min(k, _MAX_TOPK),
                    output_fields=_OUT_FIELDS,
                    search_params=params,
                )
            except Exception as e:
                raise RetrievalError(f"Milvus search failed on {self.collection!r}: {e}") from e
        return [self._hits_to_docs(hits) for hits in res]

    async def _search(self, query: str, k: int) -> list[Document]:
        return (await asyncio.to_thread(self._search_blocking, [query], k))[0]

    async def _search_batch(self, queries: list[str], k: int) -> list[list[Document]]:
        return await asyncio.to_thread(self._search_blocking, queries, k)
