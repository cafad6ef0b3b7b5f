"""``hoprank index``: build a retrieval index folder from a JSONL corpus."""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from hoprank.cli._common import fail
from hoprank.errors import HoprankError


class IndexKind(str, Enum):
    bm25 = "bm25"
    dense = "dense"
    milvus = "milvus"


def _build(
    corpus: Path,
    kind: IndexKind,
    out: Path,
    *,
    model: str | None,
    batch_size: int,
    dtype: str,
    collection: str,
    milvus_bm25: bool,
    stemmer: str | None,
    limit: int | None,
    progress: bool,
) -> dict[str, Any]:
    from hoprank.tools import BM25Retriever, DenseRetriever, Embedder, load_corpus

    t0 = time.perf_counter()
    docs = load_corpus(corpus, limit=limit)
    with _progress_bar(progress) as bar:
        if kind is IndexKind.bm25:
            task = bar.add_task("indexing (bm25)", total=len(docs))
            bm25 = BM25Retriever.from_documents(docs, stemmer=stemmer)
            bar.update(task, completed=len(docs))
            bm25.save(out)
        else:
            embedder = Embedder(model, batch_size=batch_size, dtype=dtype)
            task = bar.add_task(f"encoding ({embedder.name})", total=len(docs))

            def step(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if kind is IndexKind.dense:
                DenseRetriever.from_documents(docs, embedder, progress=step).save(out)
            else:
                _build_milvus(out, docs, embedder, collection=collection, bm25=milvus_bm25, progress=step)
    return {
        "kind": kind.value,
        "corpus": str(corpus),
        "out": str(out),
        "documents": len(docs),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _progress_bar(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=not enabled,
    )


def _build_milvus(
    out: Path, docs: list[Any], embedder: Any, *, collection: str, bm25: bool, progress: Any
) -> None:
    """Encode ``docs``, index them in a Milvus Lite file in ``out`` and write the manifest."""
    from hoprank.tools import MilvusRetriever
    from hoprank.tools.corpus import write_manifest

    out.mkdir(parents=True, exist_ok=True)
    emb = embedder.encode([d.full_text for d in docs], progress=progress)
    with MilvusRetriever(out / "milvus.db", collection, embedder=embedder, bm25=bm25) as m:
        m.index(docs, embeddings=emb)
        count = m.count()
    write_manifest(
        out,
        "milvus",
        db="milvus.db",
        collection=collection,
        count=count,
        bm25=bm25,
        embedder=embedder.describe(),
    )


def register(app: typer.Typer) -> None:
    """Add the ``index`` command to ``app``."""

    @app.command("index")
    def index(
        corpus: Path = typer.Option(..., "--corpus", help="JSONL corpus ({id, title, text} per line)."),
        kind: IndexKind = typer.Option(IndexKind.bm25, "--kind", help="Index type."),
        out: Path = typer.Option(..., "--out", help="Output folder (created)."),
        model: str | None = typer.Option(
            None, "--model", help="Embedder folder (dense/milvus); default: offline all-MiniLM-L6-v2."
        ),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="Encoding batch size."),
        dtype: str = typer.Option("float32", "--dtype", help="Embedder dtype: float32 or bfloat16."),
        collection: str = typer.Option("hoprank", "--collection", help="Milvus collection name."),
        milvus_bm25: bool = typer.Option(
            True, "--milvus-bm25/--no-milvus-bm25", help="Add Milvus full-text BM25."
        ),
        stemmer: str = typer.Option("english", "--stemmer", help="BM25 stemmer language, or 'none'."),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Index only the first N documents."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
    ) -> None:
        """Build a bm25, dense or Milvus (Lite) index folder from a JSONL corpus."""
        try:
            summary = _build(
                corpus,
                kind,
                out,
                model=model,
                batch_size=batch_size,
                dtype=dtype,
                collection=collection,
                milvus_bm25=milvus_bm25,
                stemmer=None if stemmer.lower() == "none" else stemmer,
                limit=limit,
                progress=not as_json,
            )
        except HoprankError as e:
            raise fail(e) from e
        if as_json:
            typer.echo(json.dumps(summary))
        else:
            typer.echo(
                f"indexed {summary['documents']} documents ({summary['kind']}) into {summary['out']} "
                f"in {summary['seconds']:.1f}s"
            )
