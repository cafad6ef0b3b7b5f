"""Optional download paths for users with internet access (never used in tests).

* :func:`from_ir_datasets`: any ``ir_datasets`` id with docs, queries and qrels (and
  ``scoreddocs`` as run ``scoreddocs``, e.g. ``msmarco-passage/trec-dl-2019/judged``).
* :func:`from_hf`: a Hugging Face ``datasets`` repo in the HotpotQA layout (e.g.
  ``hotpotqa/hotpot_qa`` with config ``distractor`` or ``fullwiki``).

Both import their library lazily; without it they raise
:class:`~hoprank.errors.MissingExtra` (``pip install 'hoprank[hub]'``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from hoprank.errors import DatasetError, MissingExtra
from hoprank.evals.dataset import Dataset, Query
from hoprank.evals.formats import context_qa_dataset
from hoprank.runs import Qrels, Run, order_trec
from hoprank.types import Document

__all__ = ["from_hf", "from_ir_datasets"]

logger = logging.getLogger(__name__)


def _doc_text(record: Any) -> str:
    """The text of an ``ir_datasets`` record (a NamedTuple): its ``text`` field, else its
    ``default_text()`` (records whose text spans several fields)."""
    text = record._asdict().get("text")
    if text is None and hasattr(record, "default_text"):
        text = record.default_text()
    return str(text or "")


def _document(doc_id: str, record: Any) -> Document:
    return Document(id=doc_id, text=_doc_text(record), title=record._asdict().get("title") or None)


def from_ir_datasets(dataset_id: str, *, name: str | None = None, only_run_docs: bool = True) -> Dataset:
    """Load an ``ir_datasets`` dataset. With ``only_run_docs`` and a ``scoreddocs`` run,
    only the documents the run lists are fetched (e.g. 4k passages instead of 8.8M)."""
    try:
        import ir_datasets  # type: ignore[import-not-found,unused-ignore]
    except ImportError as e:
        raise MissingExtra("hub", "ir_datasets") from e
    ds = ir_datasets.load(dataset_id)
    queries = {q.query_id: Query(id=q.query_id, text=_doc_text(q)) for q in ds.queries_iter()}
    qrels: Qrels = {}
    for r in ds.qrels_iter():
        qrels.setdefault(r.query_id, {})[r.doc_id] = int(r.relevance)
    runs: dict[str, Run] = {}
    if ds.has_scoreddocs():
        scores: dict[str, dict[str, float]] = {}
        for sd in ds.scoreddocs_iter():
            scores.setdefault(sd.query_id, {})[sd.doc_id] = float(sd.score)
        runs["scoreddocs"] = {q: order_trec(v) for q, v in scores.items()}
    if only_run_docs and runs:
        wanted = sorted({d for r in runs["scoreddocs"].values() for d, _ in r})
        docs = ds.docs_store().get_many(wanted)
        corpus = {i: _document(i, d) for i, d in docs.items()}
    else:
        corpus = {d.doc_id: _document(d.doc_id, d) for d in ds.docs_iter()}
    level = 2 if "trec-dl" in dataset_id else 1
    return Dataset(
        name=name or dataset_id.replace("/", "-"),
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        runs=runs,
        source=f"ir_datasets:{dataset_id}",
        relevance_level=level,
        relevance_source="ir_datasets id (TREC DL: 2)" if level == 2 else "default",
    )


def _hf_hotpot_records(rows: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for i, row in enumerate(rows):
        ctx = row["context"]
        sf = row.get("supporting_facts") or {"title": [], "sent_id": []}
        rec = {
            "_id": row.get("id", row.get("_id", str(i))),
            "question": row["question"],
            "answer": row.get("answer"),
            "type": row.get("type"),
            "level": row.get("level"),
            "context": [[t, list(s)] for t, s in zip(ctx["title"], ctx["sentences"], strict=True)]
            if isinstance(ctx, dict)
            else ctx,
            "supporting_facts": [[t, int(j)] for t, j in zip(sf["title"], sf["sent_id"], strict=True)]
            if isinstance(sf, dict)
            else sf,
        }
        yield f"hf row {i}", rec


def from_hf(
    repo: str,
    config: str | None = "distractor",
    *,
    split: str = "validation",
    limit: int | None = None,
    name: str | None = None,
) -> Dataset:
    """Load a HotpotQA-layout dataset from the Hugging Face hub with ``datasets``."""
    try:
        import datasets  # type: ignore[import-not-found,unused-ignore]
    except ImportError as e:
        raise MissingExtra("hub", "datasets") from e
    rows = datasets.load_dataset(repo, config, split=split)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    if "context" not in rows.column_names:
        raise DatasetError(f"{repo}: rows have no 'context' column (HotpotQA layout expected)")
    return context_qa_dataset(
        _hf_hotpot_records(rows),
        name=name or f"{repo.replace('/', '-')}-{config}-{split}",
        source=f"hf:{repo}",
    )
