"""Corpus files and index folders.

* :func:`load_corpus` reads a JSONL corpus (``{"id", "title", "text", ...}`` per line,
  the layout of ``shared/datasets/*/corpus.jsonl``) into :class:`~hoprank.types.Document`
  objects; extra fields go to ``metadata``.
* :func:`check_unique_ids` rejects duplicate ids (retrievers key documents by id).
* :func:`write_docs` / :func:`read_docs` store documents inside an index folder, and
  :func:`write_manifest` / :func:`read_manifest` the folder's ``hoprank-index.json``,
  written last so that a folder without it is known to be incomplete.
  :func:`finish_index` / :func:`read_index` do both for a retriever's ``save``/``load``.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hoprank._fsio import atomic_write, iter_jsonl, json_line, write_json_atomic
from hoprank.errors import DatasetError, InvalidInput, RetrievalError
from hoprank.types import Document

__all__ = [
    "DOCS_FILE",
    "INDEX_FORMAT",
    "MANIFEST_FILE",
    "check_unique_ids",
    "finish_index",
    "load_corpus",
    "load_queries",
    "read_docs",
    "read_index",
    "read_manifest",
    "write_docs",
    "write_manifest",
]

MANIFEST_FILE = "hoprank-index.json"
DOCS_FILE = "docs.jsonl"
INDEX_FORMAT = 1


def _parse_doc(obj: dict[str, Any], path: Path, lineno: int) -> Document:
    if "id" not in obj or obj["id"] is None or str(obj["id"]) == "":
        raise DatasetError(f"{path}:{lineno}: document has no 'id'")
    text = obj.get("text", obj.get("contents"))
    if not isinstance(text, str):
        raise DatasetError(f"{path}:{lineno}: document {obj['id']!r} has no string 'text'")
    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        raise DatasetError(f"{path}:{lineno}: document {obj['id']!r} has a non-string 'title'")
    meta = {k: v for k, v in obj.items() if k not in ("id", "text", "contents", "title")}
    return Document(id=str(obj["id"]), text=text, title=title or None, metadata=meta)


def check_unique_ids(docs: Iterable[Document], *, where: str = "corpus") -> None:
    """Raise :class:`InvalidInput` naming the ids that occur more than once."""
    counts = Counter(d.id for d in docs)
    dups = sorted(i for i, c in counts.items() if c > 1)
    if dups:
        shown = ", ".join(map(repr, dups[:10])) + (f" ... ({len(dups)} in all)" if len(dups) > 10 else "")
        raise InvalidInput(f"duplicate document ids in {where}: {shown}")


def load_corpus(path: str | os.PathLike[str], *, limit: int | None = None) -> list[Document]:
    """Read a JSONL corpus into documents (first ``limit`` lines if given).

    Raises :class:`DatasetError` for a missing file or a malformed line (naming the
    file and line number) and :class:`InvalidInput` for duplicate ids.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"corpus file not found: {p}")
    docs = [_parse_doc(obj, p, lineno) for lineno, obj in itertools.islice(iter_jsonl(p), limit)]
    check_unique_ids(docs, where=str(p))
    return docs


def load_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read queries as ``{qid: text}`` from JSONL (``{"id", "text"}``) or TSV (``qid<TAB>text``)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"queries file not found: {p}")
    out: dict[str, str] = {}
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                obj = json_line(line, f"{p}:{lineno}")
                qid, text = obj.get("id", obj.get("qid")), obj.get("text", obj.get("query"))
            else:
                parts = line.rstrip("\n").split("\t", 1)
                qid, text = (parts[0], parts[1]) if len(parts) == 2 else (None, None)
            if qid is None or not isinstance(text, str):
                raise DatasetError(f"{p}:{lineno}: expected a query id and text")
            out[str(qid)] = text
    return out


def write_docs(folder: Path, docs: Sequence[Document]) -> None:
    """Write ``docs`` (id, title, text, metadata; no scores) to ``folder/docs.jsonl``."""
    with atomic_write(folder / DOCS_FILE) as f:
        for d in docs:
            row = {"id": d.id, "title": d.title, "text": d.text, "metadata": d.metadata}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_docs(folder: Path) -> list[Document]:
    """Read the documents an index folder stores."""
    p = folder / DOCS_FILE
    if not p.is_file():
        raise RetrievalError(f"index folder {folder} has no {DOCS_FILE}")
    docs = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
                docs.append(
                    Document(
                        id=row["id"],
                        title=row.get("title"),
                        text=row["text"],
                        metadata=row.get("metadata") or {},
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise RetrievalError(f"{p}:{lineno}: corrupt document record: {e}") from e
    return docs


def write_manifest(folder: Path, kind: str, **fields: Any) -> dict[str, Any]:
    """Write ``hoprank-index.json`` (last, atomically) and return its content."""
    from hoprank._version import __version__

    manifest = {
        "format": INDEX_FORMAT,
        "kind": kind,
        "hoprank_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **fields,
    }
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    return manifest


def read_manifest(folder: str | os.PathLike[str], kind: str | None = None) -> dict[str, Any]:
    """Read an index folder's manifest; check its ``kind`` when given."""
    p = Path(folder) / MANIFEST_FILE
    if not p.is_file():
        raise RetrievalError(f"{folder} is not a complete hoprank index folder (no {MANIFEST_FILE})")
    try:
        manifest: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RetrievalError(f"{p}: corrupt manifest: {e}") from e
    if manifest.get("format") != INDEX_FORMAT:
        raise RetrievalError(f"{p}: unsupported index format {manifest.get('format')!r}")
    if kind is not None and manifest.get("kind") != kind:
        raise RetrievalError(f"{folder} holds a {manifest.get('kind')!r} index, not {kind!r}")
    return manifest


def finish_index(folder: Path, kind: str, docs: Sequence[Document], **fields: Any) -> Path:
    """Complete an index folder whose own files are written: ``docs.jsonl``, then the
    manifest (``kind``, the document ``count`` and ``fields``). Returns ``folder``."""
    write_docs(folder, docs)
    write_manifest(folder, kind, count=len(docs), **fields)
    return folder


def read_index(folder: str | os.PathLike[str], kind: str) -> tuple[Path, dict[str, Any], list[Document]]:
    """An index folder written by :func:`finish_index`: the folder, its manifest (of
    ``kind``) and its documents, as many as the manifest counts (else
    :class:`RetrievalError`)."""
    src = Path(folder)
    manifest = read_manifest(src, kind)
    docs = read_docs(src)
    if len(docs) != manifest.get("count"):
        raise RetrievalError(
            f"{src}: manifest says {manifest.get('count')} documents, {DOCS_FILE} has {len(docs)}"
        )
    return src, manifest, docs
