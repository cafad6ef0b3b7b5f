"""The attention capture behind :func:`hoprank.llm.runtime.attention.attention_rows`.

:class:`AttentionCapture` is owned by one suffix pass and used as a context manager:
while entered, the model's attention implementation is ``hoprank_capture``, a wrapper
registered in transformers' ``AttentionInterface`` that receives every layer's post-RoPE
query states and the full (cache-updated) key states, computes
``softmax(q k^T * scaling + mask)`` in float32 for just the suffix rows (GQA heads
repeated, softcapping and sliding windows honoured), adds the column sums into the
capture, and delegates the attention itself to SDPA.

transformers internals are used in two places, each gated with a clear error: the
registration (``AttentionInterface``/``AttentionMaskInterface``, transformers >=
:data:`CAPTURE_MIN_TRANSFORMERS`; :func:`capture_supported` says why not) and the
per-pass switch of the configs' private ``_attn_implementation_internal``
(:func:`attn_implementation`). transformers' attention table is process-wide, so the
registered wrapper finds the capture of the running pass through a context variable
that only :class:`AttentionCapture` sets and resets (one per thread and task).

torch and transformers are imported lazily.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any

from hoprank.errors import EngineError, HoprankError

__all__ = [
    "CAPTURE_IMPLEMENTATION",
    "CAPTURE_MIN_TRANSFORMERS",
    "AttentionCapture",
    "CaptureUnsupported",
    "attn_implementation",
    "can_capture",
    "capture_supported",
]

CAPTURE_IMPLEMENTATION = "hoprank_capture"

# Largest score block (heads x query rows x keys) computed at once, in elements (fp32).
_BLOCK_ELEMENTS = 1 << 25

#: the oldest transformers whose ``AttentionInterface`` and ``masking_utils`` the capture uses
CAPTURE_MIN_TRANSFORMERS = (4, 53)

# The capture of the suffix pass running in this thread/task: set and reset only by
# ``AttentionCapture.__enter__``/``__exit__`` (None outside a capture).
_ACTIVE: contextvars.ContextVar[AttentionCapture | None] = contextvars.ContextVar(
    "hoprank_attention_capture", default=None
)


def _transformers_version() -> tuple[int, int]:
    import transformers

    major, minor, *_ = (transformers.__version__ + ".0").split(".")
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def capture_supported() -> str | None:
    """None when this transformers supports the capture, else why not."""
    found = _transformers_version()
    if found < CAPTURE_MIN_TRANSFORMERS:
        need = ".".join(map(str, CAPTURE_MIN_TRANSFORMERS))
        return f"attention capture needs transformers >= {need}, found {'.'.join(map(str, found))}"
    return None


class AttentionCapture:
    """The attention capture of one suffix pass, used as a context manager.

    While entered, every config of ``model`` uses the ``hoprank_capture`` attention
    implementation and each selected layer's call adds, per head, the attention mass
    its suffix rows give every key position (:meth:`add`); leaving restores the
    implementation. :meth:`rows` then gives the accumulated rows over the prefix.
    """

    def __init__(self, model: Any, layers: Sequence[int]) -> None:
        self.model = model
        self.layers = set(layers)
        self.seen: set[int] = set()
        self.acc: dict[int, Any] = {}  # layer -> torch.Tensor (heads, kv_len) float32
        self._token: contextvars.Token[AttentionCapture | None] | None = None
        self._switch: contextlib.AbstractContextManager[None] | None = None

    def __enter__(self) -> AttentionCapture:
        _register_capture()
        switch = attn_implementation(self.model, CAPTURE_IMPLEMENTATION)
        switch.__enter__()
        self._switch = switch
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None
        if self._switch is not None:
            self._switch.__exit__(exc_type, exc, tb)
            self._switch = None

    def rows(self, sel: Sequence[int], n_prefix: int) -> Any:
        """``(len(sel), heads, n_prefix)`` float32: the captured rows over the prefix."""
        import torch

        if self.seen != set(sel) or set(self.acc) != set(sel):
            raise CaptureUnsupported(f"captured layers {sorted(self.seen)} instead of {list(sel)}")
        return torch.stack([self.acc[layer][:, :n_prefix] for layer in sel])

    def add(self, module: Any, query: Any, key: Any, mask: Any, scaling: Any, kwargs: dict[str, Any]) -> None:
        import torch

        layer = getattr(module, "layer_idx", None)
        if layer is None or layer not in self.layers:
            return
        if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
            raise CaptureUnsupported("attention sinks")
        self.seen.add(int(layer))
        _b, n_heads, q_len, head_dim = query.shape
        kv_heads, kv_len = key.shape[1], key.shape[2]
        if n_heads % kv_heads:
            raise CaptureUnsupported(f"{n_heads} query heads over {kv_heads} key heads")
        scale = float(scaling) if scaling is not None else head_dim**-0.5
        softcap = kwargs.get("softcap")
        window = kwargs.get("sliding_window")
        k = key[0].float().repeat_interleave(n_heads // kv_heads, dim=0)  # (H, N, d)
        q = query[0].float()  # (H, S, d)
        acc = self.acc.get(int(layer))
        if acc is None:
            acc = self.acc[int(layer)] = torch.zeros(
                n_heads, kv_len, dtype=torch.float32, device=query.device
            )
        elif acc.shape[1] != kv_len:
            raise HoprankError(f"attention capture: key length changed within a pass ({kv_len})")
        keys_pos = torch.arange(kv_len, device=query.device)
        block = max(1, _BLOCK_ELEMENTS // max(1, n_heads * kv_len))
        for s0 in range(0, q_len, block):
            s1 = min(q_len, s0 + block)
            scores = torch.matmul(q[:, s0:s1], k.transpose(-1, -2)) * scale  # (H, s, N)
            if softcap is not None:
                scores = torch.tanh(scores / softcap) * softcap
            if isinstance(mask, torch.Tensor) and mask.dim() == 4:
                m = mask[0, :, s0:s1, :kv_len]
                if m.dtype == torch.bool:
                    scores = scores.masked_fill(~m, float("-inf"))
                else:
                    scores = scores + m.float()
            else:  # no explicit mask: causal (and sliding window) from positions
                q_pos = torch.arange(kv_len - q_len + s0, kv_len - q_len + s1, device=query.device)
                allowed = keys_pos[None, :] <= q_pos[:, None]
                if window is not None:
                    allowed &= (q_pos[:, None] - keys_pos[None, :]) < int(window)
                scores = scores.masked_fill(~allowed[None], float("-inf"))
            acc += torch.softmax(scores, dim=-1).sum(dim=1)


class CaptureUnsupported(HoprankError):
    """The generic capture path cannot handle this model: use the eager path."""


def _capture_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> Any:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cap = _ACTIVE.get()
    if cap is not None:
        cap.add(module, query, key, attention_mask, scaling, kwargs)
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )


def _register_capture() -> None:
    """Register the capture wrapper (and SDPA's mask) under ``hoprank_capture`` unless
    transformers' tables hold it already (registering is idempotent either way)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if CAPTURE_IMPLEMENTATION not in AttentionInterface().valid_keys():  # type: ignore[no-untyped-call]
        AttentionInterface.register(CAPTURE_IMPLEMENTATION, _capture_attention)
    if CAPTURE_IMPLEMENTATION not in AttentionMaskInterface().valid_keys():  # type: ignore[no-untyped-call]
        AttentionMaskInterface.register(CAPTURE_IMPLEMENTATION, sdpa_mask)


def _configs(model: Any) -> list[Any]:
    """Every config object that a module of ``model`` reads at forward time."""
    from transformers import PretrainedConfig

    seen: dict[int, Any] = {id(model.config): model.config}
    for mod in model.modules():
        cfg = getattr(mod, "config", None)
        if isinstance(cfg, PretrainedConfig):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


@contextlib.contextmanager
def attn_implementation(model: Any, name: str) -> Iterator[None]:
    """Switch every config of ``model`` to attention implementation ``name`` for a block."""
    configs = _configs(model)
    for c in configs:
        if not hasattr(c, "_attn_implementation_internal"):  # a transformers internal
            raise EngineError(
                f"transformers {'.'.join(map(str, _transformers_version()))}: {type(c).__name__} has no "
                "_attn_implementation_internal, which attention rows switch per pass; "
                "use a transformers release that has it (4.46 to 5.x are known to)"
            )
    saved = [c._attn_implementation_internal for c in configs]
    try:
        for c in configs:
            c._attn_implementation_internal = name
        yield
    finally:
        for c, old in zip(configs, saved, strict=True):
            c._attn_implementation_internal = old


def can_capture(model: Any) -> bool:
    can = getattr(type(model), "_can_set_attn_implementation", None)
    if not callable(can):
        return False
    try:
        return bool(can())
    except Exception:  # pragma: no cover - heuristic over source code
        return False
