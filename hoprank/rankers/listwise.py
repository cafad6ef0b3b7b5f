"""Shared machinery of the sliding-window listwise rankers (RankGPT, FIRST).

:class:`ListwiseRanker` runs the :mod:`~hoprank.rankers.window` driver, builds each
window's prompt from a versioned template (labels, identifier neutralisation, passages
cut to a per-passage token budget so the prompt fits the engine's context window) and
collects usage and one trace :class:`~hoprank.types.Step` per window. Subclasses only
implement :meth:`ListwiseRanker._rank_window`.

Template variables offered to a listwise prompt (a template declares the ones it uses;
``query`` and ``passages`` are required): ``query``; ``passages`` (a list of
``{"label", "text"}``); ``num`` (number of passages); ``example`` (an output example
such as ``[2] > [1]``); ``label_desc`` (``params.label_desc.numeric`` or ``.letters`` of the
prompt, else of ``rankgpt@1``: ``"a numerical"`` / ``"an alphabetical"``).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hoprank.errors import ContextOverflow, PromptError
from hoprank.llm.base import LLM, Capability, EngineLike, Message, require_capability
from hoprank.prompts import PromptTemplate, load_prompt, prompt_param
from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.rankers.config import WindowedConfig
from hoprank.rankers.passages import (
    LabelStyle,
    fit_passage_budget,
    passage_text,
    prompt_tokens,
    to_messages,
    truncate_passages,
)
from hoprank.rankers.window import WindowSpan, slide
from hoprank.types import Document, Step, Usage

__all__ = ["ListwiseConfig", "ListwiseRanker", "WindowPrompt", "require"]

logger = logging.getLogger(__name__)

LISTWISE_VARIABLES = ("query", "passages", "num", "example", "label_desc")


def require(engine: EngineLike, capability: Capability, ranker: str, hint: str = "") -> None:
    """Raise :class:`~hoprank.errors.CapabilityMissing` unless ``engine`` declares (and
    implements) ``capability`` (:func:`hoprank.llm.base.require_capability`)."""
    require_capability(engine, capability, hint or f"needed by {ranker}")


class ListwiseConfig(WindowedConfig):
    """A listwise ranker's parameters: the shared window and passage budget, and the
    label style (``"numeric"`` ``[1]``..., or ``"letters"`` ``[A]``..., windows <= 26)."""

    labels: LabelStyle = "numeric"


@dataclass
class WindowPrompt:
    """A rendered window prompt and the numbers behind it."""

    messages: list[Message]
    labels: list[str]
    passage_budget: int
    prompt_tokens: int
    #: the same passages (same cuts) under each of ``build_prompt``'s ``also`` queries
    also: list[list[Message]] = field(default_factory=list)


def _example(labels: Sequence[str]) -> str:
    if len(labels) >= 2:
        return f"[{labels[1]}] > [{labels[0]}]"
    return f"[{labels[0]}]"


class ListwiseRanker(BaseRanker):
    """Base of the sliding-window listwise rankers (see the module docstring)."""

    name = "listwise"
    default_prompt = "rankgpt"
    config_class: ClassVar[type[WindowedConfig]] = ListwiseConfig
    config: WindowedConfig
    #: the label style of a ranker whose config has none (FIRST: letters)
    default_labels: ClassVar[LabelStyle] = "numeric"

    def __init__(self, engine: LLM, *, config: WindowedConfig | None = None, **params: Any) -> None:
        """``params``: the fields of ``config_class`` (:class:`ListwiseConfig`: ``prompt``,
        ``window``, ``step``, ``passes``, ``focus_top_k``, ``labels``, ``max_passage_tokens``,
        ``neutralize``), validated; or a ready ``config`` (``params`` update it)."""
        self.engine: LLM = engine
        self.config = self.config_class.build(config, params)
        cfg = self.config
        self.prompt: PromptTemplate = load_prompt(
            cfg.prompt if cfg.prompt is not None else self.default_prompt
        )
        missing = {"query", "passages"} - set(self.prompt.variables)
        if missing:
            raise PromptError(
                f"prompt {self.prompt.name}@{self.prompt.version} must declare {sorted(missing)} "
                f"to be used by {self.name}; listwise prompts may use {list(LISTWISE_VARIABLES)}"
            )
        unknown = set(self.prompt.variables) - set(LISTWISE_VARIABLES)
        if unknown:
            raise PromptError(
                f"prompt {self.prompt.name}@{self.prompt.version} declares {sorted(unknown)}, "
                f"which {self.name} cannot fill; listwise prompts may use {list(LISTWISE_VARIABLES)}"
            )
        descs = prompt_param(self.prompt, "label_desc", "rankgpt@1")
        if not isinstance(descs, dict) or not {"numeric", "letters"} <= set(descs):
            raise PromptError(
                f"prompt {self.prompt.ref}: params.label_desc must map 'numeric' and 'letters' to text"
            )
        self.label_desc: dict[str, str] = {k: str(v) for k, v in descs.items()}
        self.window_cfg = cfg.window_config()
        self.label_style: LabelStyle = cfg.labels if isinstance(cfg, ListwiseConfig) else self.default_labels
        self.max_passage_tokens = cfg.max_passage_tokens
        self.neutralize = cfg.neutralize

    # -------------------------------------------------------------- prompt building

    def _render(self, query: str, labels: Sequence[str], texts: Sequence[str]) -> list[Message]:
        values: dict[str, Any] = {
            "query": query,
            "passages": [{"label": lab, "text": t} for lab, t in zip(labels, texts, strict=True)],
            "num": len(labels),
            "example": _example(labels),
            "label_desc": self.label_desc["numeric" if labels[0].isdigit() else "letters"],
        }
        return to_messages(self.prompt.render(**{k: values[k] for k in self.prompt.variables}))

    def build_prompt(
        self,
        query: str,
        docs: Sequence[Document],
        labels: Sequence[str],
        *,
        max_new_tokens: int,
        prefill: str = "",
        also: Sequence[str] = (),
    ) -> WindowPrompt:
        """Render the window prompt with every passage cut to the token budget that
        makes the prompt fit ``engine.context_window - max_new_tokens``.

        ``also``: more queries (FIRST's content-free calibration query) to render with
        the very same passage cuts, each of which must fit too (``WindowPrompt.also``).
        """
        queries = [query, *also]
        empty = [""] * len(labels)
        overhead = max(prompt_tokens(self.engine, self._render(q, labels, empty), prefill) for q in queries)
        budget = fit_passage_budget(
            self.engine,
            overhead_tokens=overhead,
            n_passages=len(docs),
            max_new_tokens=max_new_tokens,
            max_passage_tokens=self.max_passage_tokens,
        )
        full = [passage_text(d, neutralize=self.neutralize).split(" ") for d in docs]
        limit = self.engine.context_window - max_new_tokens
        while True:
            # A word is at least one token: cutting words first keeps tokenizing cheap.
            texts = truncate_passages(self.engine, [" ".join(words[:budget]) for words in full], budget)
            rendered = [self._render(q, labels, texts) for q in queries]
            sizes = [prompt_tokens(self.engine, m, prefill) for m in rendered]
            used = max(sizes)
            if used <= limit:
                break
            # Tokens merge differently at passage boundaries than in the empty-passage
            # render the budget came from: shrink until the real prompt fits.
            smaller = budget - max(1, -(-(used - limit) // max(1, len(docs))))
            if smaller < min(8, self.max_passage_tokens):
                raise ContextOverflow(
                    f"{len(docs)} passages do not fit: the prompt needs {used} tokens with "
                    f"{budget} tokens per passage, context window {self.engine.context_window} "
                    f"minus {max_new_tokens} reserved output; use a smaller window",
                    prompt_tokens=used,
                    context_window=self.engine.context_window,
                )
            budget = smaller
        return WindowPrompt(
            messages=rendered[0],
            labels=list(labels),
            passage_budget=budget,
            prompt_tokens=sizes[0],
            also=rendered[1:],
        )

    # -------------------------------------------------------------- driving

    @abstractmethod
    async def _rank_window(
        self, query: str, docs: list[Document], span: WindowSpan
    ) -> tuple[list[int], Step]:
        """Order one window: local indices (best first, a permutation) and its trace step."""

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        trace: list[Step] = []
        usage = Usage()

        async def reorder(chunk: list[Document], span: WindowSpan) -> list[int]:
            nonlocal usage
            order, step = await self._rank_window(query, chunk, span)
            trace.append(step)
            usage = usage + step.usage
            if step.fallback:
                logger.warning(
                    "%s: window [%d, %d) fell back to the prior order: %s",
                    self.name,
                    span.start,
                    span.end,
                    step.error,
                )
            return order

        result = await slide(docs, reorder, self.window_cfg, top_k=top_k)
        n = len(result.items)
        ranked = [d.with_score(float(n - i)) for i, d in enumerate(result.items)]
        return RankerOutput(ranked, usage, trace)

    def _step(self, span: WindowSpan, docs: Sequence[Document], wp: WindowPrompt) -> Step:
        return Step(
            kind="window",
            name=self.name,
            prompt=self.prompt.ref,
            input={
                "start": span.start,
                "end": span.end,
                "pass": span.pass_index,
                "ids": [d.id for d in docs],
                "labels": wp.labels,
                "prompt_tokens": wp.prompt_tokens,
                "passage_budget": wp.passage_budget,
            },
        )
