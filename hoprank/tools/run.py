"""Serve first-stage candidates from a TREC run file.

Reads ``qid docid rank score`` (the 4-column TSV of ``shared/datasets/*/run.*.tsv``)
or the standard 6-column TREC format ``qid Q0 docid rank score tag`` with
:func:`hoprank.runs.read_run`: per query, documents are ordered the way
``trec_eval`` reads runs (score descending, ties by docid descending), so a replayed
run and its evaluation see one order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from hoprank.errors import DatasetError, InvalidInput, RetrievalError
from hoprank.runs import read_run
from hoprank.tools.corpus import check_unique_ids, load_corpus, load_queries
from hoprank.tools.retriever import BaseRetriever
from hoprank.types import Document

__all__ = ["RunRetriever"]


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


class RunRetriever(BaseRetriever):
    """Candidates from a precomputed run (e.g. BM25 top-100 or a distractor set).

    :meth:`search_by_qid` serves a query id; :meth:`search` maps the query text to its
    id through the queries file (exact match up to whitespace and case) and raises
    :class:`~hoprank.errors.RetrievalError` for a query the run does not cover.
    ``k`` above the number of candidates returns all of them.
    """

    name = "run_candidates"
    description = "Return the precomputed candidate passages for a known benchmark query."

    def __init__(
        self,
        run: Mapping[str, Sequence[tuple[str, float]]],
        docs: Sequence[Document],
        queries: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        docs = list(docs)
        check_unique_ids(docs, where="corpus")
        self._docs = {d.id: d for d in docs}
        missing = sorted({doc for cands in run.values() for doc, _ in cands if doc not in self._docs})
        if missing:
            shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise DatasetError(f"{len(missing)} run document ids are not in the corpus: {shown}")
        self._run = {qid: list(cands) for qid, cands in run.items()}
        self._queries = dict(queries or {})
        self._by_text: dict[str, str] = {}
        for qid, text in self._queries.items():
            self._by_text.setdefault(_norm(text), qid)
        if name:
            self.name = name
        if description:
            self.description = description

    @classmethod
    def from_files(
        cls,
        run: str | os.PathLike[str],
        corpus: str | os.PathLike[str] | Sequence[Document],
        queries: str | os.PathLike[str] | Mapping[str, str] | None = None,
        **kwargs: str | None,
    ) -> RunRetriever:
        """Load a run file, a JSONL corpus (or documents) and optionally a queries file."""
        docs = load_corpus(corpus) if isinstance(corpus, (str, os.PathLike)) else list(corpus)
        qs = load_queries(queries) if isinstance(queries, (str, os.PathLike)) else queries
        return cls(read_run(run), docs, qs, **kwargs)

    @property
    def qids(self) -> list[str]:
        """Query ids the run covers."""
        return list(self._run)

    def qid_for(self, query: str) -> str:
        """The query id whose text is ``query`` (``RetrievalError`` if unknown)."""
        qid = self._by_text.get(_norm(query))
        if qid is None:
            hint = "" if self._queries else " (no queries file was given: use search_by_qid)"
            raise RetrievalError(f"query not found in the run's queries: {query[:80]!r}{hint}")
        if qid not in self._run:
            raise RetrievalError(f"query {qid!r} has no candidates in the run")
        return qid

    def search_by_qid_sync(self, qid: str, k: int = 10) -> list[Document]:
        """Top-``k`` candidates for a query id, best first (``score`` from the run)."""
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise InvalidInput(f"k must be an integer >= 1, got {k!r}")
        if qid not in self._run:
            raise RetrievalError(f"query id {qid!r} is not in the run")
        cands = self._run[qid][:k]
        return [self._docs[d].with_score(s, rank=r, qid=qid) for r, (d, s) in enumerate(cands, start=1)]

    async def search_by_qid(self, qid: str, k: int = 10) -> list[Document]:
        """Async form of :meth:`search_by_qid_sync` (no I/O; kept for API symmetry)."""
        return self.search_by_qid_sync(qid, k)

    async def _search(self, query: str, k: int) -> list[Document]:
        return self.search_by_qid_sync(self.qid_for(query), k)

    @property
    def corpus_size(self) -> int:
        return len(self._docs)

    def __len__(self) -> int:
        return len(self._docs)
