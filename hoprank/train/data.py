"""Training windows for a FIRST student, drawn from teacher rankings (no torch).

A :class:`TeacherList` is one query's candidates with the teacher's scores (a ranker's
run, or qrels grades over the first-stage candidates: ties allowed). :func:`make_windows`
draws ``windows_per_query`` windows of ``window`` passages from each: the first is the
teacher's top ``window`` (where the weighted RankNet puts its weight), the others random
``window``-subsets of the list; each is shown in a random order. Randomness is seeded by
``seed`` and the query id, so a query gets the same windows whatever else is trained.
A window whose passages the teacher scores all alike teaches nothing and is left out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hoprank.errors import ConfigError, DatasetError
from hoprank.types import Document

__all__ = ["TeacherList", "Window", "make_windows", "qrels_teacher", "run_teacher"]


@dataclass(frozen=True)
class TeacherList:
    """One query's candidates as the teacher ranks them: ``docs`` best first, with the
    teacher's ``scores`` (higher is better)."""

    qid: str
    query: str
    docs: tuple[Document, ...]
    scores: tuple[float, ...]


@dataclass(frozen=True)
class Window:
    """One training example: the passages in the order the student sees them, the
    teacher's score of each and its 1-based teacher rank within the window."""

    qid: str
    query: str
    docs: tuple[Document, ...]
    teacher: tuple[float, ...]
    ranks: tuple[int, ...]


def _sorted(qid: str, query: str, pairs: Iterable[tuple[Document, float]]) -> TeacherList:
    """Best first by score; ties keep the given order."""
    ranked = sorted(enumerate(pairs), key=lambda t: (-t[1][1], t[0]))
    return TeacherList(qid, query, tuple(d for _, (d, _) in ranked), tuple(s for _, (_, s) in ranked))


def run_teacher(
    qid: str,
    query: str,
    ranked: Sequence[tuple[str, float | None]],
    corpus: Mapping[str, Document],
    depth: int | None = None,
) -> TeacherList:
    """The teacher list of a ranked run (``[(docid, score), ...]``, best first): its first
    ``depth`` entries. A missing or non-finite score falls back to minus the position, so
    the run's order decides."""
    used = ranked[:depth] if depth is not None else ranked
    docs: list[Document] = []
    for docid, _ in used:
        doc = corpus.get(docid)
        if doc is None:
            raise DatasetError(f"teacher ranks document {docid!r} for query {qid!r}; the corpus has none")
        docs.append(doc)
    raw = [s for _, s in used]
    finite = [float(s) for s in raw if s is not None and math.isfinite(s)]
    scores = finite if len(finite) == len(raw) else [-float(i) for i in range(len(raw))]
    pairs = list(zip(docs, scores, strict=True))
    return _sorted(qid, query, pairs)


def qrels_teacher(
    qid: str, query: str, candidates: Sequence[Document], grades: Mapping[str, int]
) -> TeacherList:
    """The teacher list of relevance judgments: ``candidates`` (first-stage order) by
    grade (an unjudged passage counts 0); equal grades keep the first-stage order."""
    return _sorted(qid, query, [(d, float(grades.get(d.id, 0))) for d in candidates])


def make_windows(
    lists: Iterable[TeacherList], *, window: int, windows_per_query: int = 1, seed: int = 0
) -> list[Window]:
    """Training windows of up to ``window`` passages (see the module docstring)."""
    if window < 2:
        raise ConfigError(f"window must be >= 2, got {window}")
    if windows_per_query < 1:
        raise ConfigError(f"windows_per_query must be >= 1, got {windows_per_query}")
    out: list[Window] = []
    for tl in lists:
        n = len(tl.docs)
        if n < 2:
            continue
        rng = random.Random(f"{seed}\x00{tl.qid}")
        w = min(window, n)
        for k in range(windows_per_query):
            picked = list(range(w)) if k == 0 else sorted(rng.sample(range(n), w))
            shown = picked[:]
            rng.shuffle(shown)
            teacher = tuple(tl.scores[i] for i in shown)
            if len(set(teacher)) < 2:
                continue
            # teacher rank within the window: its position in the teacher's order of ``picked``
            rank_of = {i: r for r, i in enumerate(picked, 1)}
            out.append(
                Window(
                    qid=tl.qid,
                    query=tl.query,
                    docs=tuple(tl.docs[i] for i in shown),
                    teacher=teacher,
                    ranks=tuple(rank_of[i] for i in shown),
                )
            )
    return out
