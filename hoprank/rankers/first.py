"""FIRST: listwise ranking from the logits of one token (Reddy et al., 2024).

For each window the passages get letter labels ``A``..``T`` (one token each in the
SmolLM2 and Qwen2.5 tokenizers; numbers like ``12`` split into several tokens, so
numeric labels are not used), the assistant turn is prefilled with ``[`` and the engine
is asked for the next-token log-probabilities of the labels: one
``next_token_logprobs`` request per window, nothing is generated. The window is ordered
by those log-probabilities renormalised over the window's labels (a log-softmax over the
label logprobs). Windows of up to 26 passages are supported (``A``..``Z``); a larger
window raises :class:`~hoprank.errors.ConfigError`.

**Label tokens.** BPE tokenizers often merge the bracket with the letter: Qwen2.5 has
single tokens ``[A`` .. ``[N``, ``[P``, ``[R`` .. but splits ``[O`` and ``[Q`` into
``[`` + letter. After a prefilled ``[`` *token* such a model has only ever seen the
letters that do not merge, so the next-token distribution piles onto ``O`` and ``Q``
whatever the passages say (measured on DL19 with Qwen2.5-Coder-1.5B: 43 of 43 queries
ranked ``[O]`` or ``[Q]`` first). ``label_tokens="auto"`` (default) therefore scores the
merged forms ``[A``, ``[B`` ... as the first token of an un-prefilled answer whenever the
engine tokenizes with the model's own tokenizer and at least ``window`` letters merge,
labelling the passages with those letters only (e.g. ``A``..``N``, ``P``, ``R``..``V``); it
falls back to the prefill form otherwise (SmolLM2 never merges, so ``[`` + ``A`` is how
it writes labels). ``"prefill"`` and ``"merged"`` force a form.

Labels the engine could not score (an API returns only its top-20 tokens) are placed
after the scored ones, in their prior order, and listed in the trace step
(``output["missing"]``).

``calibrate=True`` also scores the same prompt with a content-free query (the prompt's
``params.calibration_query``, ``"N/A"`` in ``first@1``)
and ranks by ``log p(label | query) - log p(label | "N/A")`` (both renormalised): it
removes the label/position prior a small model puts on every list. ``shifts=K`` shows
each window in ``K`` evenly spaced rotations (the passage at position ``p`` moves to
``p + j*n/K``) and averages each passage's renormalised (calibrated) label score over
them, so no passage keeps a favoured position. All requests of a window are independent
and are sent together with ``next_token_logprobs_batch``; with the defaults (no
calibration, one ordering) it is one ``next_token_logprobs`` call per window.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import model_validator

from hoprank.errors import ConfigError
from hoprank.llm.base import LLM, Capability, LogprobRequest, TokenLogprobs, exact_tokenizer
from hoprank.prompts import prompt_param
from hoprank.rankers.base import RankerSpec
from hoprank.rankers.config import WindowedConfig
from hoprank.rankers.listwise import ListwiseRanker, WindowPrompt, require
from hoprank.rankers.passages import make_labels
from hoprank.rankers.window import WindowSpan
from hoprank.types import Document, Step, Usage, timed_step

__all__ = ["FIRST", "FIRSTConfig", "LabelScores", "log_softmax", "merged_letters", "rank_by_label_logprobs"]

LABEL_TOKENS = ("auto", "prefill", "merged")


def merged_letters(engine: LLM, prefix: str) -> list[str]:
    """The letters ``X`` for which ``prefix + X`` is one token of the engine's tokenizer."""
    tok = engine.tokenizer
    return [c for c in string.ascii_uppercase if len(tok.encode(prefix + c)) == 1]


def log_softmax(logprobs: Mapping[str, float]) -> dict[str, float]:
    """Renormalise log-probabilities over the given keys (log-sum-exp stable)."""
    if not logprobs:
        return {}
    m = max(logprobs.values())
    z = m + math.log(sum(math.exp(v - m) for v in logprobs.values()))
    return {k: v - z for k, v in logprobs.items()}


@dataclass
class LabelScores:
    """How one window was ordered from label log-probabilities."""

    order: list[int]
    scores: dict[str, float]
    missing: list[str]


def rank_by_label_logprobs(
    labels: Sequence[str],
    logprobs: Mapping[str, float],
    calibration: Mapping[str, float] | None = None,
) -> LabelScores:
    """Order ``labels`` by their renormalised log-probabilities, best first.

    With ``calibration`` the score is the difference of the two renormalised
    distributions. A label absent from ``calibration`` (an API returns only its top
    tokens) takes the lowest calibration value reported, an upper bound of its own; a
    calibration with no usable value is ignored. Labels absent from ``logprobs`` follow
    the scored ones in prior order. Ties keep the prior order.
    """
    present = {lab: logprobs[lab] for lab in labels if lab in logprobs and math.isfinite(logprobs[lab])}
    scores = log_softmax(present)
    if calibration is not None and scores:
        cal = {k: calibration[k] for k in labels if k in calibration and math.isfinite(calibration[k])}
        if cal:
            floor = min(cal.values())
            base = log_softmax({k: cal.get(k, floor) for k in scores})
            scores = {k: v - base[k] for k, v in scores.items()}
    index = {lab: i for i, lab in enumerate(labels)}
    scored = sorted(scores, key=lambda lab: (-scores[lab], index[lab]))
    missing = [lab for lab in labels if lab not in scores]
    return LabelScores(order=[index[lab] for lab in scored + missing], scores=scores, missing=missing)


class FIRSTConfig(WindowedConfig):
    """FIRST's parameters: the shared window and passage budget (letter labels, so
    ``window <= 26``), ``calibrate``, ``shifts``, ``prefill`` (default: the prompt's) and
    ``label_tokens``."""

    calibrate: bool = False
    shifts: int = 1
    prefill: str | None = None
    label_tokens: str = "auto"

    @model_validator(mode="after")
    def _check_first(self) -> Self:
        if self.shifts < 1:
            raise ConfigError(f"shifts must be >= 1, got {self.shifts}")
        if self.label_tokens not in LABEL_TOKENS:
            raise ConfigError(f"label_tokens must be one of {LABEL_TOKENS}, got {self.label_tokens!r}")
        return self


class FIRST(ListwiseRanker):
    """Single-token-logit listwise ranker. Needs ``Capability.TOKEN_LOGPROBS``.

    Args:
        engine: an engine with TOKEN_LOGPROBS (transformers, vLLM, an OpenAI-compatible
            server with ``logprobs``); the ``[`` prefill is used where the engine has
            ``Capability.PREFILL``.
        prompt: prompt name, path or template (default ``first``).
        window, step, passes, focus_top_k: sliding-window parameters (window <= 26).
        max_passage_tokens: cap per passage in the engine's tokens.
        calibrate: subtract the label distribution of the content-free query
            (``params.calibration_query`` of the prompt, else of ``first@1``: "N/A").
        shifts: present each window in this many evenly spaced rotations and average each
            passage's (calibrated) score over them (position debiasing; ``shifts``
            forwards per window, sent as one batch).
        neutralize: rewrite label-like patterns inside passages (``[B]`` -> ``B``).
        label_tokens: ``"auto"``, ``"prefill"`` or ``"merged"`` (see the module docstring).
    """

    name = "first"
    default_prompt = "first"
    config_class: ClassVar[type[WindowedConfig]] = FIRSTConfig
    config: FIRSTConfig
    default_labels = "letters"

    def __init__(self, engine: LLM, *, config: FIRSTConfig | None = None, **params: Any) -> None:
        """``params``: the fields of :class:`FIRSTConfig` (or a ready ``config``)."""
        require(engine, Capability.TOKEN_LOGPROBS, "FIRST", "FIRST reads next-token log-probabilities")
        super().__init__(engine, config=config, **params)
        cfg = self.config
        window, label_tokens = cfg.window, cfg.label_tokens
        make_labels(window, "letters")  # ConfigError for windows > 26
        self.calibrate = cfg.calibrate
        self.calibration_query = str(prompt_param(self.prompt, "calibration_query", "first@1"))
        self.shifts = cfg.shifts
        wanted = (
            cfg.prefill if cfg.prefill is not None else str(prompt_param(self.prompt, "prefill", "first@1"))
        )
        can_prefill = Capability.PREFILL in engine.capabilities
        #: the merging letters when labels are scored as merged ``prefix + letter`` tokens
        self.alphabet: list[str] | None = None
        #: the engine tokenizes like the served model (``Capability.EXACT_TOKENIZER``: an HF
        #: tokenizer of the model, or tiktoken's own encoding of an OpenAI model)
        own_tokens = exact_tokenizer(engine) is not None
        if label_tokens != "prefill" and wanted and can_prefill:
            letters = merged_letters(engine, wanted) if own_tokens or label_tokens == "merged" else []
            if len(letters) >= window:
                self.alphabet = letters
            elif label_tokens == "merged":
                raise ConfigError(
                    f"label_tokens='merged' needs {window} letters X with {wanted + 'X'!r} one token; "
                    f"{engine.name} has {len(letters)}: {''.join(letters)}"
                )
        elif label_tokens == "merged":
            raise ConfigError("label_tokens='merged' needs an engine that renders the chat (PREFILL)")
        #: without prefill the model's first token is ``[X`` or a bare ``[``; when the
        #: engine's tokenizer is the model's own, only letters whose ``[X`` is one token
        #: label a window (o200k splits ``[H``, ``[O``, ``[Q``: those would never score)
        self.plain_letters: list[str] | None = None
        if label_tokens == "auto" and wanted and not can_prefill and own_tokens:
            letters = merged_letters(engine, wanted)
            if window <= len(letters) < len(string.ascii_uppercase):
                self.plain_letters = letters
        # merged form: no prefill, the prefix goes into each candidate token instead
        self.candidate_prefix = wanted if self.alphabet is not None else ""
        self.prefill = wanted if can_prefill and self.alphabet is None else ""

    def labels_for(self, n: int) -> list[str]:
        """The labels of an ``n``-passage window: the merging letters, else ``A``, ``B``, ..."""
        letters = self.alphabet if self.alphabet is not None else self.plain_letters
        return letters[:n] if letters is not None else make_labels(n, "letters")

    @property
    def label_tokens(self) -> str:
        """``"merged"`` or ``"prefill"``: the label form this ranker scores."""
        return "merged" if self.alphabet is not None else "prefill"

    def window_request(self, query: str, docs: Sequence[Document]) -> LogprobRequest:
        """The request this ranker scores for ``docs`` shown in this order (one rotation,
        no calibration twin): prompt, label candidates and prefill exactly as
        :meth:`_rank_window` sends them. A distilled student (``hoprank train first``)
        trains on these."""
        labels = self.labels_for(len(docs))
        candidates = [self.candidate_prefix + lab for lab in labels]
        requests, _ = self._window_requests(query, list(docs), labels, candidates, [list(range(len(docs)))])
        return requests[0]

    async def _score(self, requests: list[LogprobRequest]) -> list[TokenLogprobs]:
        if len(requests) == 1:
            r = requests[0]
            return [
                await self.engine.next_token_logprobs(r.messages, candidates=r.candidates, prefill=r.prefill)
            ]
        return list(await self.engine.next_token_logprobs_batch(requests))

    @staticmethod
    def _by_label(
        logprobs: Mapping[str, float], labels: Sequence[str], candidates: Sequence[str]
    ) -> dict[str, float]:
        """Candidate-keyed log-probabilities re-keyed by label."""
        return {lab: logprobs[c] for lab, c in zip(labels, candidates, strict=True) if c in logprobs}

    def _orderings(self, n: int) -> list[list[int]]:
        """The presentation orders of a window: ``shifts`` evenly spaced rotations."""
        k = min(self.shifts, n)
        return [[(i + (j * n) // k) % n for i in range(n)] for j in range(k)]

    async def _rank_window(
        self, query: str, docs: list[Document], span: WindowSpan
    ) -> tuple[list[int], Step]:
        labels = self.labels_for(len(docs))
        candidates = [self.candidate_prefix + lab for lab in labels]
        orderings = self._orderings(len(docs))
        requests, first_prompt = self._window_requests(query, docs, labels, candidates, orderings)
        step = self._step(span, docs, first_prompt)
        step.input.update(
            {
                "prefill": self.prefill,
                "label_tokens": self.label_tokens,
                "candidates": candidates,
                "calibrate": self.calibrate,
                "shifts": len(orderings),
            }
        )
        with timed_step(step):
            results = await self._score(requests)
        usage = Usage()
        for r in results:
            usage = usage + r.usage
        step.usage = usage
        mean, label_view = self._merge_rotations(results, orderings, labels, candidates)
        order = sorted(mean, key=lambda i: (-mean[i], i))
        unscored = [i for i in range(len(docs)) if i not in mean]
        order += unscored
        step.output = {
            "order": [docs[i].id for i in order],
            "scores": {k: round(v, 4) for k, v in label_view.scores.items()},
            "missing": label_view.missing,
            "doc_scores": {docs[i].id: round(v, 4) for i, v in mean.items()},
            "unscored": [docs[i].id for i in unscored],
            "raw_top": {k: round(v, 4) for k, v in list(results[0].raw_top.items())[:10]},
        }
        if not mean:
            step.fallback = True
            step.error = "the engine returned no log-probability for any label; kept the prior order"
        return order, step

    def _window_requests(
        self,
        query: str,
        docs: list[Document],
        labels: list[str],
        candidates: list[str],
        orderings: list[list[int]],
    ) -> tuple[list[LogprobRequest], WindowPrompt]:
        """One request per rotation (and its calibration twin); the first rotation's prompt."""
        requests: list[LogprobRequest] = []
        first_prompt = None
        # The calibration prompt shows the very same passage cuts as the real one.
        also = [self.calibration_query] if self.calibrate else []
        for perm in orderings:
            shown = [docs[i] for i in perm]
            wp = self.build_prompt(query, shown, labels, max_new_tokens=1, prefill=self.prefill, also=also)
            first_prompt = first_prompt or wp
            requests.append(LogprobRequest(messages=wp.messages, candidates=candidates, prefill=self.prefill))
            if self.calibrate:
                requests.append(
                    LogprobRequest(messages=wp.also[0], candidates=candidates, prefill=self.prefill)
                )
        assert first_prompt is not None
        return requests, first_prompt

    def _merge_rotations(
        self,
        results: list[TokenLogprobs],
        orderings: list[list[int]],
        labels: list[str],
        candidates: list[str],
    ) -> tuple[dict[int, float], LabelScores]:
        """Each document's mean score over the rotations that scored it, and the first
        rotation's label scores (for the trace)."""
        per_request = 2 if self.calibrate else 1
        doc_scores: dict[int, list[float]] = {}
        scored_once: set[int] = set()
        label_view: LabelScores | None = None
        for j, perm in enumerate(orderings):
            main = self._by_label(results[j * per_request].logprobs, labels, candidates)
            base = (
                self._by_label(results[j * per_request + 1].logprobs, labels, candidates)
                if self.calibrate
                else None
            )
            ranked = rank_by_label_logprobs(labels, main, base)
            label_view = label_view or ranked
            if not ranked.scores:
                continue
            # a label this rotation did not return gets its lowest score (an upper bound),
            # so every rotation averages over the same documents on one scale
            floor = min(ranked.scores.values())
            for pos, lab in enumerate(labels):
                if lab in ranked.scores:
                    scored_once.add(perm[pos])
                doc_scores.setdefault(perm[pos], []).append(ranked.scores.get(lab, floor))
        assert label_view is not None
        return {i: sum(v) / len(v) for i, v in doc_scores.items() if i in scored_once}, label_view


#: what the registry lists (hoprank.rankers.registry finds it)
RANKER_SPECS = (
    RankerSpec(
        "first", "sliding-window single-token label logits", lambda: FIRST, default_prompt="first", order=30
    ),
)
