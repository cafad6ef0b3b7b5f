"""Last-token outputs of rows of any lengths from one forward (torch imported lazily).

The batched next-token forward of
:class:`~hoprank.llm.engines.transformers_engine.TransformersEngine` (FIRST, setwise,
pointwise; micro-batches from :class:`~hoprank.llm.engines.batching.BatchingEngine`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hoprank.errors import InvalidInput

if TYPE_CHECKING:
    import torch

__all__ = ["last_token_outputs"]


def last_token_outputs(
    module: Any, rows: Sequence[Sequence[int]], *, pad_id: int, device: Any, hidden: bool, width: int = 0
) -> torch.Tensor:
    """The output at the last token of each row (rows of any lengths) from one forward.

    Rows are **right**-padded and no attention mask is passed: under the causal mask no
    real token attends to a pad that follows it, so every row's last token sees exactly
    its own tokens at positions ``0..len-1`` (the pads' outputs are dropped). Without a
    padding mask SDPA keeps its fused causal kernels; with the usual left padding and a
    4-D mask, batches of DL19 windows ran 1.3-1.5x slower on CPU than one forward per
    row. ``module`` is a decoder (``hidden=True``: returns ``last_hidden_state`` rows,
    ``[n, hidden]``) or a causal LM accepting a tensor ``logits_to_keep`` (``hidden=False``:
    returns logits, ``[n, vocab]``, in the model's dtype). ``width`` pads the batch on the
    right to at least that many tokens (shape bucketing, :mod:`hoprank.llm.runtime._buckets`),
    which for the same reason leaves every row's output unchanged.
    """
    import torch

    if not rows or any(len(r) == 0 for r in rows):
        raise InvalidInput("last_token_outputs: every row needs at least one token")
    width = max(width, *(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    ids = ids.to(device)
    last = torch.tensor([len(r) - 1 for r in rows], device=device)
    index = torch.arange(len(rows), device=device)
    if hidden:
        out: torch.Tensor = module(input_ids=ids, use_cache=False).last_hidden_state[index, last]
        return out
    keep = torch.unique(last)  # sorted positions; logits only there
    logits = module(input_ids=ids, use_cache=False, logits_to_keep=keep).logits  # [n, k, vocab]
    picked: torch.Tensor = logits[index, torch.searchsorted(keep, last)]
    return picked
