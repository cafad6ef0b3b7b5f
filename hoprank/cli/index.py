"""``hoprank index``: build a retrieval index folder from a JSONL corpus."""

from __future__ import annotations

import dataclasses
import json
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from hoprank.cli._common import fail
from hoprank.cli._options import OptionGroup, with_option_groups
from hoprank.errors import HoprankError


class IndexKind(str, Enum):
    bm25 = "bm25"
    dense = "dense"
    milvus = "milvus"


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexOptions(OptionGroup):
    """Which index ``hoprank index`` builds, from what and how (an option group, see
    :mod:`hoprank.cli._options`)."""

    corpus: Annotated[Path, typer.Option("--corpus", help="JSONL corpus ({id, title, text} per line).")]
    kind: Annotated[IndexKind, typer.Option("--kind", help="Index type.")] = IndexKind.bm25
    out: Annotated[Path, typer.Option("--out", help="Output folder (created).")]
    model: Annotated[
        str | None,
        typer.Option("--model", help="Embedder folder (dense/milvus); default: offline all-MiniLM-L6-v2."),
    ] = None
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Encoding batch size.")] = 32
    dtype: Annotated[str, typer.Option("--dtype", help="Embedder dtype: float32 or bfloat16.")] = "float32"
    collection: Annotated[str, typer.Option("--collection", help="Milvus collection name.")] = "hoprank"
    milvus_bm25: Annotated[
        bool, typer.Option("--milvus-bm25/--no-milvus-bm25", help="Add Milvus full-text BM25.")
    ] = True
    stemmer: Annotated[str, typer.Option("--stemmer", help="BM25 stemmer language, or 'none'.")] = "english"
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Index only the first N documents.")] = (
        None
    )

    @property
    def stemmer_language(self) -> str | None:
        """``--stemmer``, None for ``none``."""
        return None if self.stemmer.lower() == "none" else self.stemmer


def _build(opts: IndexOptions, *, progress: bool) -> dict[str, Any]:
    from hoprank.tools import BM25Retriever, DenseRetriever, Embedder, load_corpus

    t0 = time.perf_counter()
    docs = load_corpus(opts.corpus, limit=opts.limit)
    with _progress_bar(progress) as bar:
        if opts.kind is IndexKind.bm25:
            task = bar.add_task("indexing (bm25)", total=len(docs))
            bm25 = BM25Retriever.from_documents(docs, stemmer=opts.stemmer_language)
            bar.update(task, completed=len(docs))
            bm25.save(opts.out)
        else:
            embedder = Embedder(opts.model, batch_size=opts.batch_size, dtype=opts.dtype)
            task = bar.add_task(f"encoding ({embedder.name})", total=len(docs))

            def step(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if opts.kind is IndexKind.dense:
                DenseRetriever.from_documents(docs, embedder, progress=step).save(opts.out)
            else:
                _build_milvus(opts, docs, embedder, progress=step)
    return {
        "kind": opts.kind.value,
        "corpus": str(opts.corpus),
        "out": str(opts.out),
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


def _build_milvus(opts: IndexOptions, docs: list[Any], embedder: Any, *, progress: Any) -> None:
    """Encode ``docs``, index them in a Milvus Lite file in ``--out`` and write the manifest."""
    from hoprank.tools import MilvusRetriever
    from hoprank.tools.corpus import write_manifest

    out, collection, bm25 = opts.out, opts.collection, opts.milvus_bm25
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


@with_option_groups
def index_cmd(
    *,
    options: IndexOptions,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
) -> None:
    """Build a bm25, dense or Milvus (Lite) index folder from a JSONL corpus."""
    try:
        summary = _build(options, progress=not as_json)
    except HoprankError as e:
        raise fail(e) from e
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"indexed {summary['documents']} documents ({summary['kind']}) into {summary['out']} "
            f"in {summary['seconds']:.1f}s"
        )


def register(app: typer.Typer) -> None:
    """Add the ``index`` command to ``app``."""
    app.command("index")(index_cmd)
