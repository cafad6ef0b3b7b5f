"""Convert a published multi-hop QA format into hoprank's common layout.

``convert(src, out_dir, format=...)`` loads ``src`` with :func:`~hoprank.evals.formats.load_dataset`
(HotpotQA distractor/fullwiki, 2WikiMultihopQA, MuSiQue, MultiHop-RAG, BEIR, or a common
folder) and writes::

    corpus.jsonl     {"id", "title", "text", ...document metadata}
    queries.jsonl    {"id", "text", "answer", "answers" (answer + aliases), "supporting",
                      "hops", "type" / "question_type", ...the format's own fields}
    qrels.tsv        qid <TAB> 0 <TAB> docid <TAB> 1|0   (supporting passages are 1)
    run.<name>.tsv   each question's own paragraphs in the published order (``context``)
    dataset.json     {"relevance_level", "format", "source", "counts", "metadata_keys"}

The written folder loads back (:func:`~hoprank.evals.dataset.load_common`) to the same
:attr:`~hoprank.evals.dataset.Dataset.content_hash` and the same per-question metadata, and
declares its relevance level (1: supporting or not) in ``dataset.json``, so nothing about it
is guessed from the folder name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hoprank._fsio import atomic_write, write_json_atomic
from hoprank.errors import DatasetError
from hoprank.evals.dataset import Dataset
from hoprank.evals.formats import detect_format, load_dataset
from hoprank.runs import write_run

__all__ = ["convert", "write_common"]

_FILES = ("corpus.jsonl", "queries.jsonl", "qrels.tsv", "dataset.json")


def _jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _check_id(path: Path, ident: str) -> None:
    if not ident or ident != ident.strip() or any(c in ident for c in "\t\r\n\v\f"):
        raise DatasetError(f"{path}: id {ident!r} cannot be written to a TSV file")


def write_common(
    ds: Dataset, out_dir: str | os.PathLike[str], *, format: str = "", overwrite: bool = False
) -> list[Path]:
    """Write ``ds`` in the common layout (see the module docstring); the files written.

    Refuses (:class:`DatasetError`) to write into a folder that already holds a dataset
    unless ``overwrite``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder")
    if not overwrite and out.is_dir() and any((out / f).exists() for f in _FILES):
        raise DatasetError(f"{out}: already holds a dataset (pass overwrite / --force to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    corpus_p = out / "corpus.jsonl"
    _jsonl(
        corpus_p,
        ({**d.metadata, "id": d.id, "title": d.title or "", "text": d.text} for d in ds.corpus.values()),
    )
    written.append(corpus_p)

    queries_p = out / "queries.jsonl"
    reserved = {"id", "text", "answers", "supporting"}

    def query_row(qid: str) -> dict[str, Any]:
        q = ds.queries[qid]
        row: dict[str, Any] = {"id": q.id, "text": q.text}
        if q.answers:
            row["answer"] = q.answers[0]
        row["answers"] = q.answers
        row["supporting"] = q.supporting
        row.update({k: v for k, v in q.metadata.items() if k not in reserved and k != "answer"})
        return row

    _jsonl(queries_p, (query_row(qid) for qid in ds.queries))
    written.append(queries_p)

    if ds.qrels:
        qrels_p = out / "qrels.tsv"
        for qid, judged in ds.qrels.items():
            for did in (qid, *judged):
                _check_id(qrels_p, did)
        with atomic_write(qrels_p) as f:
            for qid, judged in ds.qrels.items():
                for did, rel in judged.items():
                    f.write(f"{qid}\t0\t{did}\t{rel}\n")
        written.append(qrels_p)
    for name, run in ds.runs.items():
        run_p = out / f"run.{name}.tsv"
        write_run(run_p, run, tag=name)
        written.append(run_p)

    keys = sorted(
        {k for q in ds.queries.values() for k in q.metadata if k in ("hops", "type", "question_type")}
    )
    meta = {
        **ds.meta,
        "relevance_level": ds.relevance_level,
        "format": format or ds.meta.get("format") or "common",
        "source": ds.source,
        "name": ds.name,
        "counts": {
            "docs": len(ds.corpus),
            "queries": len(ds.queries),
            "qrels": sum(len(v) for v in ds.qrels.values()),
        },
        "metadata_keys": keys,
        "content_hash": ds.content_hash,
    }
    meta_p = out / "dataset.json"
    write_json_atomic(meta_p, meta)
    written.append(meta_p)
    return written


def convert(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    format: str = "auto",
    name: str | None = None,
    relevance_level: int | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Load ``src`` in ``format`` (``auto`` detects it) and write it to ``out_dir`` in the
    common layout; the loaded dataset (its level is the one written to dataset.json)."""
    p = Path(src).expanduser()
    fmt = detect_format(p) if format == "auto" else format
    ds = load_dataset(p, format=fmt, name=name, relevance_level=relevance_level)
    write_common(ds, out_dir, format=fmt, overwrite=overwrite)
    return ds
