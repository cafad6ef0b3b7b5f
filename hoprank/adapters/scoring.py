"""The relevance-score convention shared by the HTTP service and the framework adapters.

Every result gets a ``relevance_score`` in [0, 1] that never increases down the ranking,
so a client can threshold it and sort by it, and a ``score_kind`` saying what it is:

* ``"probability"``: a model probability, comparable across requests for a given ranker
  and model.

  - pointwise: ``P(yes) / (P(yes) + P(no))`` for the passage, i.e. ``sigmoid`` of the
    ranker's yes/no log-odds (``metadata["relevance_probability"]``);
  - FIRST with a single window and no calibration: the probability of the passage's label
    as the first-ranked one, renormalised over the window's labels (it sums to 1 over
    the window, so it shrinks as more passages share one window);
  - passages the engine could not score get 0.0.

* ``"rank"``: rank-based rankers (RankGPT, FIRST over several windows or calibrated,
  ICR, identity) give an order, not a probability. The score is the reciprocal rank,
  ``1 / rank`` with rank counted from 1 (1.0, 0.5, 0.333...): it does not depend on how
  many documents were sent, but it is a position, not a relevance level; threshold it
  only as "the top k".

Probabilities are clipped to [0, 1] and made non-increasing down the ranking (a running
minimum), which changes nothing when the ranker sorted by them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hoprank.types import Document, Ranking

__all__ = ["PROBABILITY", "PROBABILITY_KEY", "RANK", "relevance_scores", "sigmoid"]

PROBABILITY = "probability"
RANK = "rank"
PROBABILITY_KEY = "relevance_probability"


def sigmoid(x: float) -> float:
    """``1 / (1 + exp(-x))`` without overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _from_metadata(docs: Sequence[Document]) -> list[float] | None:
    if not all(PROBABILITY_KEY in d.metadata for d in docs):
        return None
    out = []
    for d in docs:
        p = d.metadata[PROBABILITY_KEY]
        out.append(float(p) if isinstance(p, (int, float)) and math.isfinite(p) else 0.0)
    return out


def _from_first_trace(ranking: Ranking, docs: Sequence[Document]) -> list[float] | None:
    """FIRST's label probabilities, when one uncalibrated window scored every document."""
    windows = [s for s in ranking.trace if s.kind == "window"]
    if len(windows) != 1 or windows[0].name != "first" or windows[0].input.get("calibrate"):
        return None
    doc_scores = windows[0].output.get("doc_scores")
    if not isinstance(doc_scores, dict):
        return None
    seen = set(windows[0].input.get("ids", ()))
    if any(d.id not in seen for d in docs):
        return None
    return [math.exp(float(doc_scores[d.id])) if d.id in doc_scores else 0.0 for d in docs]


def relevance_scores(ranking: Ranking | Sequence[Document]) -> tuple[list[float], str]:
    """Scores in [0, 1] for ``ranking`` (best first) and their kind (``"probability"`` or
    ``"rank"``). Pass the :class:`~hoprank.types.Ranking` itself where there is one: its
    trace carries FIRST's label probabilities."""
    docs = list(ranking.documents if isinstance(ranking, Ranking) else ranking)
    probs = _from_metadata(docs)
    if probs is None and isinstance(ranking, Ranking):
        probs = _from_first_trace(ranking, docs)
    if probs is not None and docs:
        out: list[float] = []
        low = 1.0
        for p in probs:
            low = min(low, max(0.0, min(1.0, p)))
            out.append(low)
        return out, PROBABILITY
    return [1.0 / (i + 1) for i in range(len(docs))], RANK
