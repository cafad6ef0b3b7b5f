"""The LM head recomputed in fp32 (for label log-probabilities from a bf16 model).

bf16 logits are rounded to steps of 0.125 around typical magnitudes, which ties candidate
labels; recomputing the head in fp32 costs one pass over its weights. torch is imported
lazily: importing this module is cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

__all__ = ["fp32_head_decoder", "head_fp32"]

logger = logging.getLogger(__name__)

_HEAD_CHUNK = 16384


def head_fp32(model: Any, hidden: Any) -> Any:
    """``model``'s LM head applied to ``hidden`` in fp32, in row chunks (no persistent
    fp32 copy of the weights)."""
    import torch

    head = model.get_output_embeddings()
    weight, bias = head.weight, getattr(head, "bias", None)
    h = hidden.float()
    out = torch.empty((h.shape[0], weight.shape[0]), dtype=torch.float32, device=h.device)
    for i in range(0, weight.shape[0], _HEAD_CHUNK):
        out[:, i : i + _HEAD_CHUNK] = h @ weight[i : i + _HEAD_CHUNK].float().T
    if bias is not None:
        out += bias.float()
    return out


def fp32_head_decoder(model: Any, probe_ids: Sequence[int], device: Any, name: str) -> Any:
    """The decoder to run before an fp32 LM head, or None to use the model's own logits.

    Enabled only when a probe (``probe_ids``) shows it reproduces the model's logits (no
    softcapping or logit scaling hidden in the model's forward).
    """
    import torch

    head = model.get_output_embeddings()
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if not isinstance(head, torch.nn.Linear) or decoder is None or decoder is model:
        return None
    probe = torch.tensor([list(probe_ids)], device=device)
    with torch.inference_mode():
        ref = model(input_ids=probe, use_cache=False).logits[0, -1].float()
        mine = head_fp32(model, decoder(input_ids=probe, use_cache=False).last_hidden_state[:, -1])[0]
    if int(ref.argmax()) != int(mine.argmax()) or float((ref - mine).abs().max()) > 1.0:
        logger.info("%s: fp32 LM head does not match the model's logits; using model logits", name)
        return None
    return decoder
