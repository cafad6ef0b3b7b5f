"""Deterministic top-k selection shared by the in-process retrievers."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["topk_indices"]


def topk_indices(scores: np.ndarray[Any, Any], k: int) -> np.ndarray[Any, Any]:
    """Indices of the ``k`` highest ``scores``, best first; ties go to the lower index.

    The tie rule makes rankings reproducible across save/load and across search
    backends (numpy, FAISS) that compute identical scores.
    """
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        # Everything strictly above the k-th value is in; fill the rest from the ties.
        kth = np.partition(scores, n - k)[n - k]
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)[: k - above.size]
        cand = np.concatenate([above, ties])
    else:
        cand = np.arange(n)
    order = np.lexsort((cand, -scores[cand]))
    return cand[order]
