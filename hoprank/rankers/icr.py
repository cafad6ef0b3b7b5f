"""ICR: in-context reranking from attention (Chen et al., 2024).

The passages are placed first in the prompt, then the instruction and the query. One
forward pass encodes the shared prefix (chat header + passages); the query side (the
instruction, the query and the end of the turn) is then encoded on the prefix's KV
cache twice: once with the real query and once with the content-free query "N/A". A
passage's score is the attention mass the query-side tokens pay to its tokens (mean
over query-side tokens, summed over layers and heads, summed over the passage's
tokens) minus the same mass under "N/A" (calibration). With ``mask_outliers`` the
passage tokens whose calibrated score is below ``mean - 2 std`` (over that passage's
tokens) are dropped before summing, as in the reference's default
``masked_NA_calibration``. Scores are not length-normalised (neither are the
reference's).

Order: like the reference's BEIR runs (``--reverse_doc_order``), the passages are shown
in the reverse of their prior order, so the best first-stage passage sits nearest the
query (``best_near_query=False`` shows them best first).

Long inputs: when the passages do not fit the context window (on a sliding-window
model such as Mistral v0.1 or Gemma 2/3, the sliding window when it is shorter: the
engine's ``attention_window``), or ``chunk_docs`` caps
the passages per pass), ICR runs over sliding windows from the back of the list to the
front (window ``w`` documents, stride ``w // 2``), re-ordering each window by its ICR
scores, as the reference's sliding-window mode does. Scores of different windows are
not comparable, which is why windows overlap instead of being merged by score; the
``score`` of each returned document is its calibrated score in the last window that
ranked it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Self, cast

import numpy as np
from pydantic import field_validator, model_validator

from hoprank.errors import CapabilityMissing, ConfigError, ContextOverflow, HoprankError, PromptError
from hoprank.llm.base import (
    LLM,
    AttentionEngine,
    AttentionRows,
    Capability,
    ChatRenderer,
    Message,
    attention_engine,
    chat_renderer,
)
from hoprank.prompts.registry import PromptTemplate, load_prompt, prompt_param
from hoprank.rankers.base import BaseRanker, RankerOutput, RankerSpec
from hoprank.rankers.config import ComponentConfig
from hoprank.rankers.passages import scrub_surrogates
from hoprank.rankers.window import window_spans
from hoprank.types import Document, Step, Usage, timed_step

__all__ = ["ICRConfig", "ICRRanker"]

_DOC = "\ue000"  # private-use markers: wrap each passage / mark the prefix end
_SPLIT = "\ue001"
_MARKERS = re.compile(f"([{_DOC}{_SPLIT}])")
_LABEL_TOKENS = 8  # per-passage allowance for the "\n\n[12] " around its text


class _Layout:
    """A rendered ICR prompt: prefix (chat header + passages), suffix (query side) and
    each passage's character span in the prefix (presentation order)."""

    __slots__ = ("prefix", "spans", "suffix")

    def __init__(self, prefix: str, suffix: str, spans: list[tuple[int, int]]) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.spans = spans


def _clean(text: str) -> str:
    # lone surrogates would make the HF tokenizer raise a TypeError
    return scrub_surrogates(text.replace(_DOC, "").replace(_SPLIT, ""))


def _parse(rendered: str, n_docs: int, prompt: str) -> _Layout:
    """Remove the markers from ``rendered``; find the passage spans and the split point."""
    out: list[str] = []
    pos = 0
    open_at: int | None = None
    split_at: int | None = None
    spans: list[tuple[int, int]] = []
    for part in _MARKERS.split(rendered):
        if part == _DOC:
            if open_at is None:
                open_at = pos
            else:
                spans.append((open_at, pos))
                open_at = None
        elif part == _SPLIT:
            if split_at is not None:
                raise PromptError(f"ICR prompt {prompt} renders `split` more than once")
            split_at = pos
        else:
            out.append(part)
            pos += len(part)
    if split_at is None:
        raise PromptError(f"ICR prompt {prompt} must render the `split` variable once")
    if open_at is not None or len(spans) != n_docs:
        raise PromptError(f"ICR prompt {prompt} must render each passage exactly once ({n_docs} passages)")
    if any(b > split_at for _, b in spans):
        raise PromptError(f"ICR prompt {prompt} must place every passage before `split`")
    text = "".join(out)
    return _Layout(text[:split_at], text[split_at:], spans)


def _token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Indices [t0, t1) of the tokens whose character spans overlap [start, end)."""
    idx = [t for t, (a, b) in enumerate(offsets) if b > start and a < end and b > a]
    if not idx:
        raise HoprankError(f"ICR: no prefix token covers characters [{start}, {end})")
    return idx[0], idx[-1] + 1


class ICRConfig(ComponentConfig):
    """ICR's parameters (see :class:`ICRRanker`)."""

    #: a prompt name, path, mapping or template (``load_prompt`` checks it)
    prompt: Any = "icr"
    layers: list[int] | None = None
    calibrate: bool = True
    mask_outliers: bool = False
    max_doc_tokens: int | None = 300
    chunk_docs: int | None = None
    best_near_query: bool = True
    calibration_query: str | None = None
    margin_tokens: int = 32
    #: ``(layer, head)`` pairs, or the name (or path) of a saved head selection
    heads: str | list[tuple[int, int]] | None = None

    @field_validator("heads", mode="before")
    @classmethod
    def _pairs(cls, heads: Any) -> Any:
        if heads is None or isinstance(heads, str):
            return heads
        pairs = list(heads)
        if not pairs or any(isinstance(h, str) or len(h) != 2 for h in pairs):
            raise ConfigError("ICR: heads must be a non-empty list of (layer, head) pairs")
        return [tuple(h) for h in pairs]

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.mask_outliers and not self.calibrate:
            raise ConfigError("mask_outliers needs calibrate=True (it masks calibrated token scores)")
        if self.chunk_docs is not None and self.chunk_docs < 2:
            raise ConfigError(f"chunk_docs must be >= 2 or None, got {self.chunk_docs}")
        if self.max_doc_tokens is not None and self.max_doc_tokens < 1:
            raise ConfigError(f"max_doc_tokens must be >= 1 or None, got {self.max_doc_tokens}")
        if self.margin_tokens < 0:
            raise ConfigError("margin_tokens must be >= 0")
        if self.heads is not None and self.layers is not None:
            raise ConfigError("ICR: give layers or heads, not both")
        if self.heads is not None and self.mask_outliers:
            raise ConfigError("ICR: mask_outliers is not supported with selected heads")
        return self


class ICRRanker(BaseRanker):
    """In-context reranking from attention (ICR). Needs an engine with ``Capability.ATTENTION``.

    ``layers``: which layers' attention to sum (default all); ``calibrate``: subtract the
    "N/A" query's attention; ``mask_outliers``: the reference's masked calibration;
    ``max_doc_tokens``: passages are cut to this many tokens; ``chunk_docs``: at most this
    many passages per pass (sliding windows beyond it; default: as many as fit);
    ``heads``: score from only these ``(layer, head)`` pairs, or the name (or path) of a
    head selection saved by :func:`hoprank.rankers.heads.select_heads` / ``hoprank heads
    select`` for this model (checked against the model's sha256);
    ``best_near_query``: show the best prior passage last, nearest the query (default);
    ``False`` shows them best first, which the first-shown position's attention then
    favours: over BM25 on DL19 (Qwen2.5-Coder-1.5B) 0.520 nDCG@10 against 0.495 for the
    default and 0.506 for BM25 (``benchmarks/README.md``).
    """

    name = "icr"
    config_class: ClassVar[type[ICRConfig]] = ICRConfig
    config: ICRConfig

    def __init__(
        self, engine: LLM | AttentionEngine, *, config: ICRConfig | None = None, **params: Any
    ) -> None:
        """``params``: the fields of :class:`ICRConfig` (or a ready ``config``)."""
        attention = attention_engine(engine, "ICR needs an in-process transformers engine")
        renderer = chat_renderer(engine)
        if renderer is None:
            raise CapabilityMissing(
                Capability.RENDER.value, engine.name, hint="ICR needs the engine's chat template (render)"
            )
        self.config = cfg = self.config_class.build(config, params)
        self.engine: AttentionEngine = attention
        self.renderer: ChatRenderer = renderer
        self.heads_ref: str | None = None
        self.heads: list[tuple[int, int]] | None = None
        if isinstance(cfg.heads, str):
            from hoprank.rankers.heads import load_selection

            selection = load_selection(cfg.heads, engine)
            self.heads, self.heads_ref = list(selection.heads), selection.ref
        elif cfg.heads is not None:
            self.heads = list(cfg.heads)
        #: the template (also ``prompt``, which :meth:`describe` and manifests read)
        self.template: PromptTemplate = load_prompt(cfg.prompt)
        self.prompt: PromptTemplate = self.template
        missing = {"passages", "query", "split"} - set(self.template.variables)
        if missing:
            raise PromptError(f"ICR prompt {self.template.ref} lacks variables {sorted(missing)}")
        self.layers = list(cfg.layers) if cfg.layers is not None else None
        self.calibrate = cfg.calibrate
        self.mask_outliers = cfg.mask_outliers
        self.max_doc_tokens = cfg.max_doc_tokens
        self.chunk_docs = cfg.chunk_docs
        self.best_near_query = cfg.best_near_query
        cq = (
            cfg.calibration_query
            if cfg.calibration_query is not None
            else prompt_param(self.template, "calibration_query", "icr@1")
        )
        self.calibration_query = _clean(str(cq))
        self.margin_tokens = cfg.margin_tokens

    # ------------------------------------------------------------------ prompt

    def _doc_text(self, doc: Document) -> str:
        text = " ".join(_clean(doc.full_text).split())
        if self.max_doc_tokens is not None:
            text = self.engine.tokenizer.truncate(text, self.max_doc_tokens).strip()
        return text

    def _render(self, query: str, passages: Sequence[str]) -> str:
        rendered = self.template.render(
            passages=[f"{_DOC}{p}{_DOC}" for p in passages], query=_clean(query), split=_SPLIT
        )
        messages = [cast(Message, {"role": m["role"], "content": m["content"]}) for m in rendered]
        return self.renderer.render(messages)

    def _layout(self, query: str, passages: Sequence[str]) -> _Layout:
        return _parse(self._render(query, passages), len(passages), self.template.ref)

    # ------------------------------------------------------------------ windows

    def _span(self) -> int:
        """Tokens one pass may hold: the context window, or the engine's shorter attention
        window (a sliding-window model: past it, attention cannot reach the first passages)."""
        span = self.engine.attention_window
        ctx = self.engine.context_window
        return min(ctx, span) if span > 0 else ctx

    def _window_size(self, query: str, texts: Sequence[str]) -> int:
        """How many passages one pass may hold (all of them if they fit)."""
        tok = self.engine.tokenizer
        longer = max(_clean(query), self.calibration_query, key=len)
        overhead = tok.count(_clean(self._render(longer, [])))
        cost = [tok.count(t) + _LABEL_TOKENS for t in texts]
        budget = self._span() - self.margin_tokens
        cap = min(len(texts), self.chunk_docs or len(texts))
        if overhead + sum(cost) <= budget:
            return cap
        total, k = overhead, 0
        for c in sorted(cost, reverse=True)[:cap]:
            if total + c > budget:
                break
            total, k = total + c, k + 1
        if k < 2:
            raise ContextOverflow(
                f"ICR: two passages (max_doc_tokens={self.max_doc_tokens}) do not fit the attention "
                f"window of {self._span()} tokens",
                prompt_tokens=overhead + sum(sorted(cost, reverse=True)[:2]),
                context_window=self._span(),
            )
        return k

    @staticmethod
    def _windows(n: int, w: int) -> list[tuple[int, int]]:
        """Back-to-front sliding windows [start, end) of size ``w``, stride ``w // 2``: the
        listwise rankers' spans (:func:`~hoprank.rankers.window.window_spans`); one window
        when ``w >= n``."""
        return [(0, n)] if w >= n else list(window_spans(n, w, max(1, w // 2)))

    # ------------------------------------------------------------------ scoring

    def _spans(self, rows: AttentionRows, layout: _Layout, passages: Sequence[str]) -> list[tuple[int, int]]:
        """Token spans of the passages, verified by decoding them."""
        if len(rows.prefix_offsets) != rows.prefix_tokens or any(
            len(r) != rows.prefix_tokens for r in rows.rows
        ):
            raise HoprankError("ICR: attention rows do not match the prefix tokens")
        out: list[tuple[int, int]] = []
        for (a, b), text in zip(layout.spans, passages, strict=True):
            t0, t1 = _token_span(rows.prefix_offsets, a, b)
            if rows.prefix_ids:
                decoded = self.engine.tokenizer.decode(rows.prefix_ids[t0:t1])
                if decoded.strip() != text.strip():
                    raise HoprankError(
                        f"ICR: tokens [{t0}, {t1}) decode to {decoded[:80]!r}..., not the passage "
                        f"{text[:80]!r}...: the token spans are wrong (a bug in hoprank)"
                    )
            out.append((t0, t1))
        return out

    def _score(
        self, rows: AttentionRows, spans: list[tuple[int, int]]
    ) -> tuple[list[float], list[float], list[float]]:
        """Per-passage (score, raw query mass, calibration mass), presentation order."""
        q = np.asarray(rows.rows[0], dtype=np.float64) / rows.tokens_encoded[0]
        na = (
            np.asarray(rows.rows[1], dtype=np.float64) / rows.tokens_encoded[1]
            if self.calibrate
            else np.zeros_like(q)
        )
        scores: list[float] = []
        raw: list[float] = []
        cal: list[float] = []
        for t0, t1 in spans:
            qs, ns = q[t0:t1], na[t0:t1]
            raw.append(float(qs.sum()))
            cal.append(float(ns.sum()))
            c = qs - ns
            if self.mask_outliers and c.size >= 2:
                c = c[c > c.mean() - 2.0 * c.std(ddof=1)]
            scores.append(float(c.sum()))
        return scores, raw, cal

    def _head_scores(self, rows: AttentionRows, spans: list[tuple[int, int]]) -> np.ndarray:
        """Per-passage, per-head calibrated scores, shape (passages, layers, heads)."""
        q = np.asarray(rows.head_rows[0], dtype=np.float64) / rows.tokens_encoded[0]
        na = (
            np.asarray(rows.head_rows[1], dtype=np.float64) / rows.tokens_encoded[1]
            if self.calibrate
            else np.zeros_like(q)
        )
        c = q - na
        return np.stack([c[:, :, t0:t1].sum(axis=-1) for t0, t1 in spans])

    async def head_scores(self, query: str, docs: Sequence[Document]) -> np.ndarray:
        """Calibrated ICR scores of every (layer, head) for each of ``docs`` (input order),
        shape ``(len(docs), layers, heads_per_layer)``, from one pass over all of them.

        Summing a set of heads gives exactly the score ``ICRRanker(heads=...)`` ranks by
        (head selection replays rankings from these). Raises :class:`ConfigError` when the
        passages need more than one pass."""
        docs = list(docs)
        texts = [self._doc_text(d) for d in docs]
        if self._window_size(query, texts) < len(docs):
            raise ConfigError(
                f"ICR head scores need all {len(docs)} passages in one pass; use fewer or shorter ones"
            )
        _, _step, per_head = await self._score_window(query, docs, texts, (0, len(docs)), per_head=True)
        assert per_head is not None
        return per_head

    def _pass_layout(self, query: str, passages: list[str]) -> tuple[_Layout, list[str]]:
        """The prompt layout of one pass and its suffixes (the query's, then the
        calibration query's); :class:`ContextOverflow` past the attention window."""
        layout = self._layout(query, passages)
        suffixes = [layout.suffix]
        if self.calibrate:
            na_layout = self._layout(self.calibration_query, passages)
            if na_layout.prefix != layout.prefix or na_layout.spans != layout.spans:
                raise PromptError(f"ICR prompt {self.template.ref}: the query must come after `split`")
            suffixes.append(na_layout.suffix)
        tok = self.engine.tokenizer
        needed = tok.count(layout.prefix) + max(tok.count(s) for s in suffixes)
        if needed > self._span():
            raise ContextOverflow(
                f"ICR prompt needs {needed} tokens, the attention window is {self._span()}",
                prompt_tokens=needed,
                context_window=self._span(),
            )
        return layout, suffixes

    async def _score_window(
        self,
        query: str,
        docs: Sequence[Document],
        texts: Sequence[str],
        window: tuple[int, int],
        *,
        per_head: bool = False,
    ) -> tuple[list[float], Step, np.ndarray | None]:
        """ICR scores of ``docs`` (prior order), the trace step of this pass and, with
        ``per_head``, the per-head scores (prior order)."""
        shown = list(reversed(range(len(docs)))) if self.best_near_query else list(range(len(docs)))
        passages = [texts[i] for i in shown]
        layout, suffixes = self._pass_layout(query, passages)
        step = Step(kind="icr", name=f"window {window[0]}-{window[1]}", prompt=self.template.ref)
        with timed_step(step):
            if self.heads is not None or per_head:
                rows = await self.engine.attention_rows(
                    layout.prefix, suffixes, layers=self.layers, heads=self.heads, per_head=per_head
                )
            else:
                rows = await self.engine.attention_rows(layout.prefix, suffixes, layers=self.layers)
            if len(rows.rows) != len(suffixes):
                raise HoprankError(f"ICR: engine returned {len(rows.rows)} rows for {len(suffixes)} suffixes")
            spans = self._spans(rows, layout, passages)
            s_shown, raw_shown, cal_shown = self._score(rows, spans)
            heads_shown = self._head_scores(rows, spans) if per_head else None
        scores = [0.0] * len(docs)
        for pos, i in enumerate(shown):
            scores[i] = s_shown[pos]
        by_prior = None
        if heads_shown is not None:
            by_prior = np.empty_like(heads_shown)
            for pos, i in enumerate(shown):
                by_prior[i] = heads_shown[pos]
        ids_shown = [docs[i].id for i in shown]
        step.input = {
            "window": list(window),
            "shown_order": ids_shown,
            "prefix_tokens": rows.prefix_tokens,
            "suffix_tokens_encoded": rows.tokens_encoded,
            "doc_token_spans": [list(s) for s in spans],
            "layers": rows.layers,
            "heads": self.heads_ref or ([list(h) for h in self.heads] if self.heads else None),
            "calibrate": self.calibrate,
            "mask_outliers": self.mask_outliers,
            "calibration_query": self.calibration_query if self.calibrate else None,
            "method": rows.method,
        }
        step.output = {
            "scores": dict(zip(ids_shown, s_shown, strict=True)),
            "query_mass": dict(zip(ids_shown, raw_shown, strict=True)),
            "calibration_mass": dict(zip(ids_shown, cal_shown, strict=True)) if self.calibrate else {},
            "prefix_seconds": rows.prefix_seconds,
            "suffix_seconds": rows.suffix_seconds,
        }
        step.usage = rows.usage
        return scores, step, by_prior

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        texts = [self._doc_text(d) for d in docs]
        w = self._window_size(query, texts)
        order = list(range(len(docs)))
        final: dict[int, float] = {}
        trace: list[Step] = []
        usage = Usage()
        for start, end in self._windows(len(docs), w):
            idx = order[start:end]
            scores, step, _ = await self._score_window(
                query, [docs[i] for i in idx], [texts[i] for i in idx], (start, end)
            )
            ranked = sorted(range(len(idx)), key=lambda j: (-scores[j], j))
            order[start:end] = [idx[j] for j in ranked]
            for j, i in enumerate(idx):
                final[i] = scores[j]
            step.output["order"] = [docs[i].id for i in order[start:end]]
            trace.append(step)
            usage = usage + step.usage
        out = [docs[i].with_score(final[i]) for i in order]
        return RankerOutput(out, usage=usage, trace=trace)

    def params(self) -> dict[str, Any]:
        """The validated parameters; a head selection named by ``heads`` is reported by
        its ref (name and model sha256), and the resolved calibration query."""
        out = super().params()
        out["heads"] = self.heads_ref or ([list(h) for h in self.heads] if self.heads else None)
        out["calibration_query"] = self.calibration_query
        return out


#: what the registry lists (hoprank.rankers.registry finds it)
RANKER_SPECS = (
    RankerSpec(
        "icr", "in-context reranking from attention", lambda: ICRRanker, default_prompt="icr", order=60
    ),
)
