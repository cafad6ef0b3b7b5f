"""RankGPT: listwise permutation generation with sliding windows (Sun et al., 2023).

For each window the model is shown the labelled passages (``[1]``..``[20]`` by default,
or letters) and generates a ranking such as ``[3] > [1] > [2]``, which is parsed
robustly (:mod:`hoprank.rankers.parsing`). An output without any usable identifier
keeps the window's prior order and is recorded as a fallback in the trace; engine
errors are raised, never turned into rankings.

Prompt layout (``rankgpt@1``): one system message and a single user message holding the
instruction, the passages and the output format. The original code's multi-turn layout
(one user turn per passage, each acknowledged by an assistant turn) is not used: it
costs two chat-template turns per passage and versioned templates have a fixed number
of messages. ``rankgpt-short@1`` is a compact variant for small models.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from hoprank.llm.base import LLM, Capability
from hoprank.rankers.base import RankerSpec
from hoprank.rankers.config import WindowedConfig
from hoprank.rankers.listwise import ListwiseConfig, ListwiseRanker, require
from hoprank.rankers.parsing import parse_permutation
from hoprank.rankers.passages import make_labels
from hoprank.rankers.window import WindowSpan
from hoprank.types import Document, Step, timed_step

__all__ = ["RankGPT", "RankGPTConfig"]

logger = logging.getLogger(__name__)


class RankGPTConfig(ListwiseConfig):
    """RankGPT's parameters: a listwise ranker's, the generation budget per window
    (``max_new_tokens``, else ``tokens_per_label * n + 8``) and ``tokens_per_label``
    (default: the prompt's ``params.max_new_tokens_per_label``, else 5)."""

    max_new_tokens: int | None = None
    tokens_per_label: int | None = None


class RankGPT(ListwiseRanker):
    """Sliding-window permutation-generation ranker; works on any engine with GENERATE.

    Args:
        engine: the model engine.
        prompt: a prompt name (``"rankgpt"``, ``"rankgpt-short"``), path or template.
        window, step, passes, focus_top_k: sliding-window parameters
            (:class:`~hoprank.rankers.window.WindowConfig`); ``step`` defaults to
            ``window // 2`` (20 and 10 by default).
        labels: ``"numeric"`` (``[1]``...) or ``"letters"`` (``[A]``..., windows <= 26).
        max_passage_tokens: cap on each passage, in the engine's tokens; the actual budget
            is smaller when the window would not fit the context window otherwise.
        max_new_tokens: generation budget per window; default ``tokens_per_label * n + 8``
            (``[12] > `` is about 5 tokens).
        neutralize: rewrite label-like patterns inside passages (``[3]`` -> ``(3)``).
    """

    name = "rankgpt"
    default_prompt = "rankgpt"
    config_class: ClassVar[type[WindowedConfig]] = RankGPTConfig
    config: RankGPTConfig

    def __init__(self, engine: LLM, *, config: RankGPTConfig | None = None, **params: Any) -> None:
        """``params``: the fields of :class:`RankGPTConfig` (or a ready ``config``)."""
        require(engine, Capability.GENERATE, "RankGPT")
        super().__init__(engine, config=config, **params)
        cfg = self.config
        make_labels(cfg.window, cfg.labels)  # validates the label style against the window size
        per_label = cfg.tokens_per_label or int(self.prompt.params.get("max_new_tokens_per_label", 5))
        self.tokens_per_label = per_label
        self.max_new_tokens = cfg.max_new_tokens

    def new_tokens_for(self, n: int) -> int:
        """The generation budget for a window of ``n`` passages."""
        return self.max_new_tokens if self.max_new_tokens is not None else self.tokens_per_label * n + 8

    async def _rank_window(
        self, query: str, docs: list[Document], span: WindowSpan
    ) -> tuple[list[int], Step]:
        labels = make_labels(len(docs), self.label_style)
        max_new = self.new_tokens_for(len(docs))
        wp = self.build_prompt(query, docs, labels, max_new_tokens=max_new)
        step = self._step(span, docs, wp)
        step.input["max_new_tokens"] = max_new
        with timed_step(step):
            completion = await self.engine.generate(wp.messages, max_tokens=max_new, temperature=0.0)
        parsed = parse_permutation(completion.text, labels)
        step.raw = completion.text
        step.usage = completion.usage
        step.output = {
            "order": [docs[i].id for i in parsed.order],
            "parsed": parsed.summary(),
            "finish_reason": completion.finish_reason,
        }
        if not parsed.ok:
            step.fallback = True
            step.error = f"unparseable ranking ({parsed.error}); kept the prior order"
        return parsed.order, step


#: what the registry lists (hoprank.rankers.registry finds it)
RANKER_SPECS = (
    RankerSpec(
        "rankgpt",
        "sliding-window permutation generation",
        lambda: RankGPT,
        default_prompt="rankgpt",
        order=20,
    ),
)
