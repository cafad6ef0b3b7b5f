"""The relevance-score convention shared by the HTTP service and the framework adapters.

Listwise rankers return an order, and not every ranker returns scores (RankGPT does not;
FIRST's label logits are local to a window). Integrations still need one number per
result that is non-increasing with rank, so:

* when every ranked document carries a finite score and the scores never increase down
  the ranking, those scores are used as they are (``kind == "ranker"``);
* otherwise the score is the reciprocal rank, ``1 / rank`` with rank counted from 1 over
  the full ranking (``kind == "reciprocal_rank"``: 1.0, 0.5, 0.333...).

Either way the scores are non-increasing with rank, so thresholds and sorts agree with
the ranker's order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from hoprank.types import Document

__all__ = ["RANKER", "RECIPROCAL_RANK", "relevance_scores"]

RANKER = "ranker"
RECIPROCAL_RANK = "reciprocal_rank"


def relevance_scores(ranked: Sequence[Document]) -> tuple[list[float], str]:
    """Scores for ``ranked`` (best first) and which kind they are."""
    scores = [d.score for d in ranked]
    if ranked and all(s is not None and math.isfinite(s) for s in scores):
        values = [float(s) for s in scores if s is not None]
        if all(a >= b for a, b in itertools.pairwise(values)):
            return values, RANKER
    return [1.0 / (i + 1) for i in range(len(ranked))], RECIPROCAL_RANK
