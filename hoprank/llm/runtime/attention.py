"""Attention rows from a shared prefix: the primitive behind ICR.

:func:`attention_rows` encodes a prefix once, keeps its KV cache, then encodes each
suffix on that cache (only the suffix tokens) and returns, per suffix, the attention
its tokens pay to every prefix token, summed over the selected layers, all heads and
all suffix tokens.

How the rows are obtained without materialising full attention matrices: each suffix
pass runs inside an :class:`~hoprank.llm.runtime.attention_capture.AttentionCapture` (a context
manager owned by that pass, see :mod:`hoprank.llm.runtime.attention_capture`), which switches the
model's attention implementation to a registered wrapper for that pass only and sums the
suffix rows from the query and key states while SDPA does the forward. Every transformers
model that dispatches through ``AttentionInterface`` (Llama, Qwen2/3, Mistral, Gemma,
Phi3, ...) works this way. Models that do not, and transformers older than
``CAPTURE_MIN_TRANSFORMERS``, fall back to ``output_attentions=True`` with eager
attention for the suffix passes (``method="eager"`` forces that path).

torch and transformers are imported lazily: importing this module is cheap.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from hoprank.errors import ContextOverflow, EngineError, HoprankError, InvalidInput
from hoprank.llm.base import AttentionEngine, AttentionRows
from hoprank.llm.runtime.attention_capture import (
    CAPTURE_IMPLEMENTATION,
    CAPTURE_MIN_TRANSFORMERS,
    AttentionCapture,
    CaptureUnsupported,
    attn_implementation,
    can_capture,
    capture_supported,
)
from hoprank.llm.runtime.worker import check_cancelled
from hoprank.types import Usage

__all__ = [
    "CAPTURE_IMPLEMENTATION",
    "CAPTURE_MIN_TRANSFORMERS",
    "AttentionCapture",
    "AttentionEngine",
    "HFModelHolder",
    "attention_rows",
    "select_heads",
]

logger = logging.getLogger(__name__)

Method = Literal["auto", "capture", "eager"]

_attn_implementation = attn_implementation  # the name tests and older callers use


class HFModelHolder(Protocol):
    """What :func:`attention_rows` needs from an engine: an in-process HF causal LM."""

    model: Any
    hf_tokenizer: Any
    device: Any
    dtype: Any


# ----------------------------------------------------------------------------- helpers


def _text_config_count(model: Any, field: str, what: str) -> int:
    """A positive count (``field``) of the model's text decoder config; :class:`EngineError`
    naming ``what`` when it is missing."""
    cfg = model.config
    text = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    n = getattr(text, field, None)
    if not isinstance(n, int) or n < 1:
        raise EngineError(f"cannot tell the number of {what} of {type(model).__name__}")
    return n


def _num_layers(model: Any) -> int:
    return _text_config_count(model, "num_hidden_layers", "layers")


def _num_heads(model: Any) -> int:
    return _text_config_count(model, "num_attention_heads", "attention heads")


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
    with attn_implementation(model, "eager"):
        out = base(input_ids=ids, **cache_kw, use_cache=True, output_attentions=True)
    attentions = getattr(out, "attentions", None)
    if not attentions:
        raise EngineError(f"{type(model).__name__} returned no attentions with eager attention")
    import torch

    return torch.stack([attentions[layer][0].float().sum(dim=1)[:, :n_prefix] for layer in sel])


def _run_suffix_capture(
    base: Any, model: Any, ids: Any, cache_kw: dict[str, Any], sel: list[int], n_prefix: int
) -> Any:
    with AttentionCapture(model, sel) as cap:
        base(input_ids=ids, **cache_kw, use_cache=True)
    return cap.rows(sel, n_prefix)


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
    model = engine.model
    inputs = _encode(engine, prefix, suffixes, layers=layers, heads=heads)
    passes = _SuffixPasses(
        model, engine.device, inputs.sel, inputs.n_prefix, method, _resolve_method(model, method)
    )
    mask = _head_mask(model, inputs.sel, inputs.chosen)
    rows: list[list[float]] = []
    head_rows: list[Any] = []
    suffix_seconds: list[float] = []
    with torch.inference_mode():
        passes.encode_prefix(inputs.prefix_ids)
        for ids in inputs.suffix_ids:
            check_cancelled()  # the caller may have gone: stop before each forward
            t1 = time.perf_counter()
            vec = passes.run(ids)
            if per_head:
                head_rows.append(vec.cpu().numpy())
            summed = vec.sum(dim=(0, 1)) if mask is None else (vec * mask.to(vec.device)).sum(dim=(0, 1))
            rows.append(summed.tolist())
            _sync(engine.device)
            suffix_seconds.append(time.perf_counter() - t1)
    return inputs.result(rows, head_rows, passes.prefix_seconds, suffix_seconds, passes.use)


@dataclass
class _Inputs:
    """What one call encodes: the prefix (ids and character offsets), the suffixes, and
    the layers (and heads) whose attention it sums."""

    prefix_ids: list[int]
    offsets: list[tuple[int, int]]
    suffix_ids: list[list[int]]
    sel: list[int]
    chosen: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n_prefix(self) -> int:
        return len(self.prefix_ids)

    def result(
        self,
        rows: list[list[float]],
        head_rows: list[Any],
        prefix_seconds: float,
        suffix_seconds: list[float],
        method: str,
    ) -> AttentionRows:
        n_prefix, suffix_ids = self.n_prefix, self.suffix_ids
        return AttentionRows(
            prefix_offsets=self.offsets,
            rows=rows,
            prefix_tokens=n_prefix,
            tokens_encoded=[len(ids) for ids in suffix_ids],
            layers=self.sel,
            heads=self.chosen,
            head_rows=head_rows,
            prefix_ids=self.prefix_ids,
            prefix_seconds=prefix_seconds,
            suffix_seconds=suffix_seconds,
            method=method,
            usage=Usage(
                prompt_tokens=n_prefix + sum(len(ids) for ids in suffix_ids),
                llm_calls=1 + len(suffix_ids),
                seconds=prefix_seconds + sum(suffix_seconds),
                cached_tokens=n_prefix * len(suffix_ids),
            ),
        )


def _layers_and_heads(
    model: Any, layers: Sequence[int] | None, heads: Sequence[Sequence[int]] | None
) -> tuple[list[int], list[tuple[int, int]]]:
    """The layers to run and, with ``heads``, the validated ``(layer, head)`` pairs."""
    n_layers = _num_layers(model)
    if heads is None:
        return _select_layers(layers, n_layers), []
    if layers is not None:
        raise InvalidInput("attention_rows: give layers or heads, not both")
    chosen = select_heads(heads, n_layers, _num_heads(model))
    return sorted({layer for layer, _ in chosen}), chosen


def _encode(
    engine: HFModelHolder,
    prefix: str,
    suffixes: Sequence[str],
    *,
    layers: Sequence[int] | None,
    heads: Sequence[Sequence[int]] | None,
) -> _Inputs:
    """Tokenize the prefix (with offsets) and the suffixes; check they fit the model's span."""
    model, tok = engine.model, engine.hf_tokenizer
    sel, chosen = _layers_and_heads(model, layers, heads)
    enc = tok(prefix, return_offsets_mapping=True, add_special_tokens=False)
    prefix_ids = [int(i) for i in enc["input_ids"]]
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    suffix_ids = [[int(i) for i in tok(s, add_special_tokens=False)["input_ids"]] for s in suffixes]
    for i, ids in enumerate(suffix_ids):
        if not ids:
            raise InvalidInput(f"attention_rows: suffix {i} encodes to no tokens")
    _check_span(model, len(prefix_ids), max(len(ids) for ids in suffix_ids))
    return _Inputs(prefix_ids, offsets, suffix_ids, sel, chosen)


def _check_span(model: Any, n_prefix: int, longest_suffix: int) -> None:
    span = attention_span(model)
    longest = n_prefix + longest_suffix
    if span is not None and longest > span:
        raise ContextOverflow(
            f"{type(model).__name__} attends over a sliding window of {span} tokens, and the prefix "
            f"({n_prefix} tokens) plus the longest suffix need {longest}: the suffix could not attend "
            "to the start of the prefix; use fewer or shorter passages (ICR: chunk_docs, max_doc_tokens)",
            prompt_tokens=longest,
            context_window=span,
        )


def _resolve_method(model: Any, method: Method) -> Literal["capture", "eager"]:
    """The path the suffix passes take: ``capture`` where the model and transformers
    support it, else ``eager`` (``auto``) or an :class:`EngineError` (``capture``)."""
    if method == "eager":
        return "eager"
    why = (
        None
        if can_capture(model)
        else (f"{type(model).__name__} does not dispatch through transformers' AttentionInterface")
    )
    why = why or capture_supported()
    if why is None:
        return "capture"
    if method == "capture":
        raise EngineError(f"{why}; use method='eager'")
    return "eager"


def _head_mask(model: Any, sel: list[int], chosen: list[tuple[int, int]]) -> Any:
    """``(len(sel), heads, 1)`` ones on the chosen heads (None: every head counts)."""
    if not chosen:
        return None
    import torch

    mask = torch.zeros(len(sel), _num_heads(model), 1, dtype=torch.float32)
    for layer, head in chosen:
        mask[sel.index(layer), head, 0] = 1.0
    return mask


class _SuffixPasses:
    """The passes of one call: the prefix encoded once into a KV cache, then each suffix
    on that cache (restored between suffixes), captured or eager; a capture the model
    turns out not to support falls back to eager for the rest of the call (``auto``)."""

    def __init__(
        self, model: Any, device: Any, sel: list[int], n_prefix: int, requested: Method, use: str
    ) -> None:
        self.model = model
        self.base = getattr(model, "base_model", model)
        self.device = device
        self.sel = sel
        self.n_prefix = n_prefix
        self.requested = requested
        self.use = use
        self.key = _cache_keyword(self.base)
        self.prefix_seconds = 0.0
        self._restore: Callable[[], Any] | None = None

    def encode_prefix(self, prefix_ids: list[int]) -> None:
        import torch

        check_cancelled()
        t0 = time.perf_counter()
        cache = _new_cache(self.model)
        self.base(
            input_ids=torch.tensor([prefix_ids], device=self.device), **{self.key: cache}, use_cache=True
        )
        _sync(self.device)
        self.prefix_seconds = time.perf_counter() - t0
        if cache.get_seq_length() != self.n_prefix:
            raise HoprankError(
                f"prefix cache holds {cache.get_seq_length()} tokens, expected {self.n_prefix}"
            )
        self._restore = _restorer(cache, self.n_prefix)

    def run(self, ids: list[int]) -> Any:
        """``(len(sel), heads, n_prefix)`` rows of one suffix."""
        import torch

        assert self._restore is not None, "encode_prefix first"
        x = torch.tensor([ids], device=self.device)
        if self.use == "eager":
            return _run_suffix_eager(
                self.base, self.model, x, {self.key: self._restore()}, self.sel, self.n_prefix
            )
        try:
            return _run_suffix_capture(
                self.base, self.model, x, {self.key: self._restore()}, self.sel, self.n_prefix
            )
        except CaptureUnsupported as e:
            if self.requested == "capture":
                raise EngineError(
                    f"attention capture unsupported for {type(self.model).__name__}: {e}"
                ) from e
            logger.warning("attention capture unsupported (%s); falling back to eager attention", e)
            self.use = "eager"
            return _run_suffix_eager(
                self.base, self.model, x, {self.key: self._restore()}, self.sel, self.n_prefix
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
