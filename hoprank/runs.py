"""Ranked lists: TREC qrels and run files, and reciprocal rank fusion.

A floor-level module (it imports only :mod:`hoprank.errors`, :mod:`hoprank.types` and
:mod:`hoprank._fsio`),
so retrievers, rankers, agents and the evals all read, write and fuse ranked lists
through one home.

TREC files
----------
Accepted layouts (whitespace- or tab-separated, ``#`` comments and blank lines skipped):

* qrels, 4 columns: ``qid iter docid rel`` (the official TREC layout, ``iter`` ignored);
* qrels, 3 columns: ``qid docid rel`` (hoprank's common layout, BEIR's ``qrels/*.tsv``);
  a header line (``query-id corpus-id score``) is recognised on line 1 and skipped;
* runs, 6 columns: ``qid Q0 docid rank score tag``;
* runs, 4 columns: ``qid docid rank score`` (hoprank's common layout).

A line that holds a tab is split on tabs only, so document ids with spaces (HotpotQA
titles) survive a round trip through :func:`write_run`, which writes tab-separated lines
(trec_eval itself splits on any whitespace and cannot read such ids). A UTF-8 byte-order
mark is skipped.

Run order follows trec_eval: by score descending, ties broken by docid **descending**
(the rank column is read but, as in trec_eval, not used for ordering). Every error names
the file and the line.

Fusion
------
:func:`rrf_fuse`: reciprocal rank fusion (Cormack, Clarke & Büttcher, 2009) scores a
document by ``sum_i w_i / (k + rank_i(d))`` over the rankings that contain it, with
1-based ranks and ``k = 60``. It needs no score calibration, which is why it fuses BM25
with dense retrieval, a reranker's order with the first stage, and per-sub-question
result lists in the agent pipeline, equally well.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from hoprank._fsio import atomic_write
from hoprank.errors import DatasetError, InvalidInput
from hoprank.types import Document

__all__ = [
    "Qrels",
    "Run",
    "check_weights",
    "ndcg_at",
    "order_trec",
    "read_qrels",
    "read_run",
    "rrf_fuse",
    "write_run",
]

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]
"""qid -> docid -> graded relevance."""

Run = dict[str, list[tuple[str, float]]]
"""qid -> [(docid, score)] best first."""


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with open(path, encoding="utf-8-sig") as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                s = line.strip()
                if not s or s.startswith("#"):
                    continue
                if "\t" in s:
                    yield lineno, [c.strip() for c in s.split("\t") if c.strip()]
                else:
                    yield lineno, s.split()
        except UnicodeDecodeError as e:
            raise DatasetError(f"{path}:{lineno + 1}: not UTF-8 text: {e}") from e


def _int(path: Path, lineno: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        try:
            f = float(value)
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: {what} {value!r} is not a number") from None
        if not f.is_integer():
            raise DatasetError(f"{path}:{lineno}: {what} {value!r} is not an integer") from None
        return int(f)


def _float(path: Path, lineno: int, value: str, what: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise DatasetError(f"{path}:{lineno}: {what} {value!r} is not a number") from None
    if math.isnan(f):
        raise DatasetError(f"{path}:{lineno}: {what} is NaN")
    return f


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read a qrels file (3 or 4 columns, see the module docstring)."""
    p = Path(path)
    qrels: Qrels = {}
    ncols: int | None = None
    for lineno, parts in _lines(p):
        if ncols is None and lineno == 1 and len(parts) == 3 and not _is_number(parts[2]):
            continue  # BEIR header: query-id corpus-id score
        if len(parts) not in (3, 4):
            raise DatasetError(
                f"{p}:{lineno}: expected 3 (qid docid rel) or 4 (qid iter docid rel) columns, got {len(parts)}"
            )
        if ncols is None:
            ncols = len(parts)
        elif len(parts) != ncols:
            raise DatasetError(f"{p}:{lineno}: {len(parts)} columns where earlier lines have {ncols}")
        qid, docid, rel = (parts[0], parts[1], parts[2]) if ncols == 3 else (parts[0], parts[2], parts[3])
        q = qrels.setdefault(qid, {})
        grade = _int(p, lineno, rel, "relevance")
        if docid in q and q[docid] != grade:
            raise DatasetError(f"{p}:{lineno}: conflicting judgments for ({qid}, {docid})")
        q[docid] = grade
    if not qrels:
        raise DatasetError(f"{p}: no judgments found")
    return qrels


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def order_trec(scored: Mapping[str, float] | Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Order ``(docid, score)`` pairs as trec_eval does: score desc, then docid desc."""
    items = list(scored.items()) if isinstance(scored, Mapping) else list(scored)
    items.sort(key=lambda x: x[0], reverse=True)
    items.sort(key=lambda x: x[1], reverse=True)  # stable: ties keep docid-descending order
    return items


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run (6 or 4 columns). Each query's list is ordered like trec_eval does."""
    p = Path(path)
    scores: dict[str, dict[str, float]] = {}
    ncols: int | None = None
    for lineno, parts in _lines(p):
        if len(parts) not in (4, 6):
            raise DatasetError(
                f"{p}:{lineno}: expected 6 (qid Q0 docid rank score tag) or 4 (qid docid rank score) "
                f"columns, got {len(parts)}"
            )
        if ncols is None:
            ncols = len(parts)
        elif len(parts) != ncols:
            raise DatasetError(f"{p}:{lineno}: {len(parts)} columns where earlier lines have {ncols}")
        if ncols == 6:
            qid, docid, rank, score = parts[0], parts[2], parts[3], parts[4]
        else:
            qid, docid, rank, score = parts[0], parts[1], parts[2], parts[3]
        _int(p, lineno, rank, "rank")
        q = scores.setdefault(qid, {})
        if docid in q:
            raise DatasetError(f"{p}:{lineno}: document {docid!r} listed twice for query {qid!r}")
        q[docid] = _float(p, lineno, score, "score")
    if not scores:
        raise DatasetError(f"{p}: no run lines found")
    return {qid: order_trec(docs) for qid, docs in scores.items()}


def write_run(
    path: str | os.PathLike[str],
    run: Mapping[str, Sequence[str] | Sequence[tuple[str, float]]],
    *,
    tag: str = "hoprank",
) -> None:
    """Write a 6-column TREC run. Lists are taken as ranked (best first).

    Scores written are ``n - rank + 1`` (strictly decreasing), so trec_eval, which orders
    by score, sees exactly the given order whatever scores the ranker produced. Columns
    are tab-separated; an id holding a tab or a line break, or with leading or trailing
    whitespace, cannot be written (:class:`DatasetError`); ids with inner spaces are
    written as they are (``read_run`` reads them back; trec_eval cannot).
    """
    p = Path(path)
    for qid, entries in run.items():
        for ident in (qid, *(x if isinstance(x, str) else x[0] for x in entries)):
            if ident != ident.strip() or any(c in ident for c in "\t\r\n\v\f") or not ident:
                raise DatasetError(f"{p}: id {ident!r} cannot be written to a TREC file")
    with atomic_write(p) as f:
        for qid, docs in run.items():
            n = len(docs)
            for i, d in enumerate(docs):
                docid = d if isinstance(d, str) else d[0]
                f.write(f"{qid}\tQ0\t{docid}\t{i + 1}\t{n - i}\t{tag}\n")


def check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """``n`` fusion weights (all 1.0 when ``weights`` is None); each must be >= 0."""
    if weights is None:
        return [1.0] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise InvalidInput(f"got {len(w)} weights for {n} rankings")
    if any(x < 0 for x in w):
        raise InvalidInput(f"RRF weights must be >= 0, got {w}")
    return w


def rrf_fuse(
    rankings: Sequence[Sequence[Document]],
    k: int = 60,
    weights: Sequence[float] | None = None,
) -> list[Document]:
    """Fuse best-first rankings by reciprocal rank fusion; dedupe by document id.

    A document's rank in a list is its 1-based position (a repeat within one list
    counts only at its first position). The fused score is
    ``sum_i weights[i] / (k + rank_i)``. Output documents are the first-seen copy of
    each id with ``score`` set to the fused score, ``metadata["rank"]`` (1-based) and
    ``metadata["rrf_ranks"]``: its rank in each input list (``None`` where absent).
    Ties keep first-seen order (by list, then position), so the result is deterministic.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InvalidInput(f"RRF k must be an integer >= 0, got {k!r}")
    w = check_weights(weights, len(rankings))
    scores: dict[str, float] = {}
    first: dict[str, Document] = {}
    ranks: dict[str, list[int | None]] = {}
    for li, ranking in enumerate(rankings):
        seen: set[str] = set()
        for pos, doc in enumerate(ranking, start=1):
            if doc.id in seen:
                continue
            seen.add(doc.id)
            if doc.id not in first:
                first[doc.id] = doc
                scores[doc.id] = 0.0
                ranks[doc.id] = [None] * len(rankings)
            scores[doc.id] += w[li] / (k + pos)
            ranks[doc.id][li] = pos
    order = sorted(first, key=lambda i: -scores[i])  # sorted() is stable: ties keep first-seen order
    return [first[i].with_score(scores[i], rank=r, rrf_ranks=ranks[i]) for r, i in enumerate(order, start=1)]


def ndcg_at(ranked: Sequence[str], qrels: Mapping[str, int], k: int | None = None) -> float:
    """nDCG of a ranked list with linear gains (trec_eval's ``ndcg_cut_k``; ``k=None`` is
    ``ndcg``). Here, with the ranked lists, so rankers (head selection) and evals share it."""
    ranked = ranked if k is None else ranked[:k]
    dcg = 0.0
    for i, d in enumerate(ranked):
        g = qrels.get(d, 0)
        if g > 0:
            dcg += g / math.log2(i + 2)
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)
    ideal = ideal if k is None else ideal[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0
