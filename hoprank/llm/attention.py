"""Attention rows from a shared prefix: the primitive behind ICR.

:func:`attention_rows` encodes a prefix once, keeps its KV cache, then encodes each
suffix on that cache (only the suffix tokens) and returns, per suffix, the attention
its tokens pay to every prefix token, summed over the selected layers, all heads and
all suffix tokens.

How the rows are obtained without materialising full attention matrices: while a
suffix pass runs, the model's attention implementation is switched (for that pass
only) to a registered wrapper, ``hoprank_capture``, which receives every layer's
post-RoPE query states and the full (cache-updated) key states, computes
``softmax(q k^T * scaling + mask)`` in float32 for just the suffix rows (GQA heads
repeated, softcapping and sliding windows honoured), adds the column sums into an
accumulator, and then delegates the actual attention to SDPA. Every transformers
model that dispatches through ``AttentionInterface`` (Llama, Qwen2/3, Mistral, Gemma,
Phi3, ...) works this way. Models that do not fall back to ``output_attentions=True``
with eager attention for the suffix passes (``method="eager"`` forces that path).

torch and transformers are imported lazily: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol

from hoprank.errors import ContextOverflow, EngineError, HoprankError, InvalidInput
from hoprank.llm.base import AttentionEngine, AttentionRows
from hoprank.llm.worker import check_cancelled
from hoprank.types import Usage

__all__ = ["CAPTURE_IMPLEMENTATION", "AttentionEngine", "HFModelHolder", "attention_rows", "select_heads"]

logger = logging.getLogger(__name__)

CAPTURE_IMPLEMENTATION = "hoprank_capture"
Method = Literal["auto", "capture", "eager"]

# Largest score block (heads x query rows x keys) computed at once, in elements (fp32).
_BLOCK_ELEMENTS = 1 << 25

_local = threading.local()
_register_lock = threading.Lock()
_registered = False


class HFModelHolder(Protocol):
    """What :func:`attention_rows` needs from an engine: an in-process HF causal LM."""

    model: Any
    hf_tokenizer: Any
    device: Any
    dtype: Any


# ----------------------------------------------------------------------------- capture


class _Capture:
    """Accumulates, for one suffix pass, the attention mass per key position."""

    def __init__(self, layers: set[int]) -> None:
        self.layers = layers
        self.seen: set[int] = set()
        self.acc: dict[int, Any] = {}  # layer -> torch.Tensor (heads, kv_len) float32

    def add(self, module: Any, query: Any, key: Any, mask: Any, scaling: Any, kwargs: dict[str, Any]) -> None:
        import torch

        layer = getattr(module, "layer_idx", None)
        if layer is None or layer not in self.layers:
            return
        if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
            raise _Unsupported("attention sinks")
        self.seen.add(int(layer))
        _b, n_heads, q_len, head_dim = query.shape
        kv_heads, kv_len = key.shape[1], key.shape[2]
        if n_heads % kv_heads:
            raise _Unsupported(f"{n_heads} query heads over {kv_heads} key heads")
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


class _Unsupported(HoprankError):
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

    cap: _Capture | None = getattr(_local, "capture", None)
    if cap is not None:
        cap.add(module, query, key, attention_mask, scaling, kwargs)
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )


def _ensure_registered() -> None:
    global _registered
    with _register_lock:
        if _registered:
            return
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(CAPTURE_IMPLEMENTATION, _capture_attention)
        AttentionMaskInterface.register(CAPTURE_IMPLEMENTATION, sdpa_mask)
        _registered = True


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
def _attn_implementation(model: Any, name: str) -> Iterator[None]:
    """Switch every config of ``model`` to attention implementation ``name`` for a block."""
    configs = _configs(model)
    saved = [getattr(c, "_attn_implementation_internal", c._attn_implementation) for c in configs]
    try:
        for c in configs:
            if hasattr(c, "_attn_implementation_internal"):
                c._attn_implementation_internal = name
            else:  # pragma: no cover - older transformers
                c._attn_implementation = name
        yield
    finally:
        for c, old in zip(configs, saved, strict=True):
            if hasattr(c, "_attn_implementation_internal"):
                c._attn_implementation_internal = old
            else:  # pragma: no cover
                c._attn_implementation = old


def _can_capture(model: Any) -> bool:
    can = getattr(type(model), "_can_set_attn_implementation", None)
    if not callable(can):
        return False
    try:
        return bool(can())
    except Exception:  # pragma: no cover - heuristic over source code
        return False


# ----------------------------------------------------------------------------- helpers


def _num_layers(model: Any) -> int:
    cfg = model.config
    text = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    n = getattr(text, "num_hidden_layers", None)
    if not isinstance(n, int) or n < 1:
        raise EngineError(f"cannot tell the number of layers of {type(model).__name__}")
    return n


def _num_heads(model: Any) -> int:
    cfg = model.config
    text = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    n = getattr(text, "num_attention_heads", None)
    if not isinstance(n, int) or n < 1:
        raise EngineError(f"cannot tell the number of attention heads of {type(model).__name__}")
    return n


def select_heads(heads: Sequence[Sequence[int]], n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """Validate ``(layer, head)`` pairs (negative layers count from the end); sorted, unique."""
    out: set[tuple[int, int]] = set()
    for pair in heads:
        if len(pair) != 2:
            raise InvalidInput(f"a head is a (layer, head) pair, got {pair!r}")
        layer, head = int(pair[0]), int(pair[1])
        idx = layer + n_layers if layer < 0 else layer
        if not 0 <= idx < n_layers:
            raise InvalidInput(f"head {pair!r}: layer out of range for a model with {n_layers} layers")
        if not 0 <= head < n_heads:
            raise InvalidInput(f"head {pair!r}: head out of range for a model with {n_heads} heads")
        out.add((idx, head))
    if not out:
        raise InvalidInput("heads must name at least one (layer, head) pair (or be None for all)")
    return sorted(out)


def _select_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    out: list[int] = []
    for layer in layers:
        idx = layer + n_layers if layer < 0 else layer
        if not 0 <= idx < n_layers:
            raise InvalidInput(f"layer {layer} out of range for a model with {n_layers} layers")
        if idx not in out:
            out.append(idx)
    if not out:
        raise InvalidInput("layers must name at least one layer (or be None for all)")
    return sorted(out)


def attention_span(model: Any) -> int | None:
    """The longest sequence over which every layer attends to every earlier token: the
    sliding window when any layer slides (Mistral v0.1, Gemma 2/3), else ``None``.

    Past it, a sliding layer's keys no longer hold the first tokens, so attention rows
    would silently miss the start of the prefix.
    """
    cfg = getattr(model, "config", None)
    get_text = getattr(cfg, "get_text_config", None)
    if callable(get_text):
        cfg = get_text()
    window = getattr(cfg, "sliding_window", None)
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        return None
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None:
        return window if any("sliding" in str(t) for t in layer_types) else None
    if getattr(cfg, "use_sliding_window", True) is False:
        return None
    return window


def _cache_keyword(base: Any) -> str:
    """The KV cache keyword of this model's forward: ``cache`` (transformers >= 5.2x;
    ``past_key_values`` is deprecated there and goes in 5.40) or ``past_key_values``."""
    import inspect

    try:
        takes_cache = "cache" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - forward without a signature
        takes_cache = False
    return "cache" if takes_cache else "past_key_values"


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # pragma: no cover - older signature
        return DynamicCache()


def _croppable(cache: Any) -> bool:
    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    return all(getattr(ly, "is_croppable", False) and not getattr(ly, "is_sliding", False) for ly in layers)


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def _run_suffix_eager(
    base: Any, model: Any, ids: Any, cache_kw: dict[str, Any], sel: list[int], n_prefix: int
) -> Any:
    with _attn_implementation(model, "eager"):
        out = base(input_ids=ids, **cache_kw, use_cache=True, output_attentions=True)
    attentions = getattr(out, "attentions", None)
    if not attentions:
        raise EngineError(f"{type(model).__name__} returned no attentions with eager attention")
    import torch

    return torch.stack([attentions[layer][0].float().sum(dim=1)[:, :n_prefix] for layer in sel])


def _run_suffix_capture(
    base: Any, model: Any, ids: Any, cache_kw: dict[str, Any], sel: list[int], n_prefix: int
) -> Any:
    cap = _Capture(set(sel))
    _local.capture = cap
    try:
        with _attn_implementation(model, CAPTURE_IMPLEMENTATION):
            base(input_ids=ids, **cache_kw, use_cache=True)
    finally:
        _local.capture = None
    import torch

    if cap.seen != set(sel) or set(cap.acc) != set(sel):
        raise _Unsupported(f"captured layers {sorted(cap.seen)} instead of {sel}")
    return torch.stack([cap.acc[layer][:, :n_prefix] for layer in sel])


# ----------------------------------------------------------------------------- public


def attention_rows(
    engine: HFModelHolder,
    prefix: str,
    suffixes: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[Sequence[int]] | None = None,
    per_head: bool = False,
    method: Method = "auto",
) -> AttentionRows:
    """Attention from each suffix's tokens to the tokens of ``prefix`` (blocking).

    The prefix is tokenized with offsets (no special tokens added: the text is expected
    to be a rendered chat prompt) and encoded once; each suffix is then encoded alone on
    the prefix's KV cache, which is cropped back to the prefix between suffixes (or
    copied, for caches that cannot be cropped). ``rows[s][t]`` is the attention mass the
    tokens of suffix ``s`` give prefix token ``t``, summed over the selected ``layers``
    (default all), all heads and all suffix tokens; divide by ``tokens_encoded[s]`` for
    the mean over suffix tokens. ``method``: ``"capture"`` (compute rows from the query
    and key states, SDPA does the forward), ``"eager"`` (``output_attentions=True``), or
    ``"auto"`` (capture, falling back to eager where the model does not support it).

    ``heads``: sum only these ``(layer, head)`` pairs instead of every head of ``layers``
    (ICR with selected retrieval heads; ``layers`` must then be ``None``). ``per_head``:
    also return, per suffix, the unsummed rows as a float32 array of shape
    ``(len(layers), heads_per_layer, prefix_tokens)`` in ``head_rows`` (head selection).
    """
    import torch

    if not prefix:
        raise InvalidInput("attention_rows: the prefix must not be empty")
    if not suffixes:
        raise InvalidInput("attention_rows: give at least one suffix")
    if method not in ("auto", "capture", "eager"):
        raise InvalidInput(f"attention_rows: unknown method {method!r}")
    model, tok = engine.model, engine.hf_tokenizer
    n_layers = _num_layers(model)
    chosen: list[tuple[int, int]] = []
    if heads is not None:
        if layers is not None:
            raise InvalidInput("attention_rows: give layers or heads, not both")
        chosen = select_heads(heads, n_layers, _num_heads(model))
        sel = sorted({layer for layer, _ in chosen})
    else:
        sel = _select_layers(layers, n_layers)
    enc = tok(prefix, return_offsets_mapping=True, add_special_tokens=False)
    prefix_ids = [int(i) for i in enc["input_ids"]]
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    suffix_ids = [[int(i) for i in tok(s, add_special_tokens=False)["input_ids"]] for s in suffixes]
    for i, ids in enumerate(suffix_ids):
        if not ids:
            raise InvalidInput(f"attention_rows: suffix {i} encodes to no tokens")
    n_prefix = len(prefix_ids)
    span = attention_span(model)
    longest = n_prefix + max(len(ids) for ids in suffix_ids)
    if span is not None and longest > span:
        raise ContextOverflow(
            f"{type(model).__name__} attends over a sliding window of {span} tokens, and the prefix "
            f"({n_prefix} tokens) plus the longest suffix need {longest}: the suffix could not attend "
            "to the start of the prefix; use fewer or shorter passages (ICR: chunk_docs, max_doc_tokens)",
            prompt_tokens=longest,
            context_window=span,
        )
    use = method
    if use != "eager" and not _can_capture(model):
        if use == "capture":
            raise EngineError(
                f"{type(model).__name__} does not dispatch through transformers' AttentionInterface; "
                "use method='eager'"
            )
        use = "eager"
    if use != "eager":
        _ensure_registered()
        use = "capture" if use == "auto" else use

    base = getattr(model, "base_model", model)
    device = engine.device
    rows: list[list[float]] = []
    head_rows: list[Any] = []
    suffix_seconds: list[float] = []
    mask = None
    if chosen:
        mask = torch.zeros(len(sel), _num_heads(model), 1, dtype=torch.float32)
        for layer, head in chosen:
            mask[sel.index(layer), head, 0] = 1.0
    with torch.inference_mode():
        check_cancelled()
        t0 = time.perf_counter()
        cache = _new_cache(model)
        key = _cache_keyword(base)
        base(input_ids=torch.tensor([prefix_ids], device=device), **{key: cache}, use_cache=True)
        _sync(device)
        prefix_seconds = time.perf_counter() - t0
        if cache.get_seq_length() != n_prefix:
            raise HoprankError(f"prefix cache holds {cache.get_seq_length()} tokens, expected {n_prefix}")
        restore = _restorer(cache, n_prefix)
        for ids in suffix_ids:
            check_cancelled()  # the caller may have gone: stop before each forward
            t1 = time.perf_counter()
            x = torch.tensor([ids], device=device)
            if use == "eager":
                vec = _run_suffix_eager(base, model, x, {key: restore()}, sel, n_prefix)
            else:
                try:
                    vec = _run_suffix_capture(base, model, x, {key: restore()}, sel, n_prefix)
                except _Unsupported as e:
                    if method == "capture":
                        raise EngineError(
                            f"attention capture unsupported for {type(model).__name__}: {e}"
                        ) from e
                    logger.warning("attention capture unsupported (%s); falling back to eager attention", e)
                    use = "eager"
                    vec = _run_suffix_eager(base, model, x, {key: restore()}, sel, n_prefix)
            if per_head:
                head_rows.append(vec.cpu().numpy())
            summed = vec.sum(dim=(0, 1)) if mask is None else (vec * mask.to(vec.device)).sum(dim=(0, 1))
            rows.append(summed.tolist())
            _sync(device)
            suffix_seconds.append(time.perf_counter() - t1)
    seconds = prefix_seconds + sum(suffix_seconds)
    return AttentionRows(
        prefix_offsets=offsets,
        rows=rows,
        prefix_tokens=n_prefix,
        tokens_encoded=[len(ids) for ids in suffix_ids],
        layers=sel,
        heads=chosen,
        head_rows=head_rows,
        prefix_ids=prefix_ids,
        prefix_seconds=prefix_seconds,
        suffix_seconds=suffix_seconds,
        method=use,
        usage=Usage(
            prompt_tokens=n_prefix + sum(len(ids) for ids in suffix_ids),
            llm_calls=1 + len(suffix_ids),
            seconds=seconds,
            cached_tokens=n_prefix * len(suffix_ids),
        ),
    )


def _restorer(cache: Any, n_prefix: int) -> Callable[[], Any]:
    """A function returning a cache that holds exactly the prefix: the same cache cropped
    back (dynamic full-attention caches) or a fresh copy of the prefix cache (others)."""
    if not _croppable(cache):
        pristine = copy.deepcopy(cache)
        return lambda: copy.deepcopy(pristine)

    def crop() -> Any:
        extra = cache.get_seq_length() - n_prefix
        if extra > 0:
            cache.crop(-extra)
        if cache.get_seq_length() != n_prefix:
            raise HoprankError(f"cropping the KV cache left {cache.get_seq_length()} tokens, not {n_prefix}")
        return cache

    return crop
