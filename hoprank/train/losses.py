"""Listwise distillation losses on one window's label-token logits (torch).

``scores`` are the student's logits of the window's label tokens at the first generated
position (any shift-invariant form works: raw logits, log-probabilities), one per passage
in the order shown; ``teacher`` holds the teacher's scores of the same passages (higher is
better, ties allowed: qrels grades).

- :func:`ranknet_loss`: FIRST's weighted RankNet (Reddy et al. 2024, after the
  authors' ``rank_net(weighted=True)``): over every pair the teacher orders strictly,
  ``softplus(s_worse - s_better)`` weighted ``1 / (rank_better + rank_worse)`` (teacher
  ranks within the window, 1-based), averaged over the pairs. The weights put the top of
  the teacher's list first.
- :func:`listnet_loss`: ListNet (Cao et al. 2007), the cross-entropy of the student's
  softmax over the labels against the softmax of the teacher's scores / ``temperature``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["listnet_loss", "ranknet_loss", "teacher_ranks"]


def teacher_ranks(teacher: Sequence[float]) -> list[int]:
    """1-based ranks by teacher score, best first; ties keep index order."""
    order = sorted(range(len(teacher)), key=lambda i: (-teacher[i], i))
    ranks = [0] * len(teacher)
    for pos, i in enumerate(order, 1):
        ranks[i] = pos
    return ranks


def ranknet_loss(
    scores: torch.Tensor,
    teacher: torch.Tensor,
    ranks: torch.Tensor | None = None,
    *,
    weighted: bool = True,
) -> torch.Tensor:
    """Weighted RankNet of one window (see the module docstring).

    ``scores``, ``teacher``: shape ``[n]``; ``ranks``: the teacher's 1-based ranks of the
    passages (default :func:`teacher_ranks` of ``teacher``). ``weighted=False`` gives
    plain RankNet. A window without a strictly ordered pair has loss 0 (still attached
    to ``scores``' graph).
    """
    if ranks is None:
        ranks = torch.tensor(teacher_ranks(teacher.tolist()), device=scores.device)
    better = teacher[:, None] > teacher[None, :]  # [i, j]: the teacher puts i above j
    if not bool(better.any()):
        return scores.sum() * 0.0
    diffs = scores[None, :] - scores[:, None]  # s_j - s_i
    losses = torch.nn.functional.softplus(diffs)[better]
    if weighted:
        r = ranks.to(scores.dtype)
        losses = losses / (r[:, None] + r[None, :])[better]
    return losses.mean()


def listnet_loss(scores: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """ListNet of one window: ``-sum softmax(teacher / T) * log_softmax(scores)``."""
    target = torch.softmax(teacher.to(scores.dtype) / temperature, dim=-1)
    return -(target * torch.log_softmax(scores, dim=-1)).sum()
