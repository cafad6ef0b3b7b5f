"""Pointwise LLM relevance scoring: ``score = log P("Yes") - log P("No")``.

Each passage is judged on its own ("Does the passage answer the query?") and the first
answer token's log-probabilities of the yes/no tokens give the score. All passages of a
query are sent as ``next_token_logprobs_batch`` requests (in chunks of ``batch_size``).
Small models judge one passage far better than they order a list (see
``models.md``), which makes this the strongest offline baseline.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field

from hoprank.errors import ContextOverflow, EngineError, PromptError
from hoprank.llm.base import LLM, Capability, LogprobRequest, TokenLogprobs
from hoprank.prompts import PromptTemplate, load_prompt
from hoprank.rankers.base import BaseRanker, RankerOutput, RankerSpec
from hoprank.rankers.config import ComponentConfig
from hoprank.rankers.listwise import require
from hoprank.rankers.passages import passage_text, prompt_tokens, to_messages
from hoprank.types import Document, Step, Usage, timed_step

__all__ = ["PointwiseConfig", "PointwiseLLM", "yes_no_score"]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def yes_no_score(result: TokenLogprobs, yes: str, no: str) -> float | None:
    """``log P(yes) - log P(no)``; ``None`` when the engine scored neither.

    When only one of the two was scored (an API's top-k list), the lowest log-probability
    the engine reported stands in for the other: an upper bound on the unseen token.
    Without any reported floor the present one alone decides (+/- 30). Non-finite
    log-probabilities (``-inf`` from a server, NaN) count as not scored, so the margin is
    always finite or ``None``.
    """
    lp_yes = _finite(result.logprobs.get(yes))
    lp_no = _finite(result.logprobs.get(no))
    if lp_yes is None and lp_no is None:
        return None
    finite_top = [v for v in result.raw_top.values() if math.isfinite(v)]
    floor = min(finite_top) if finite_top else None
    if lp_yes is None:
        return (floor - lp_no) if floor is not None and lp_no is not None else -30.0
    if lp_no is None:
        return (lp_yes - floor) if floor is not None else 30.0
    return lp_yes - lp_no


class PointwiseConfig(ComponentConfig):
    """PointwiseLLM's parameters (see the class)."""

    #: a prompt name, path, mapping or template (``load_prompt`` checks it)
    prompt: Any = None
    max_passage_tokens: int = Field(120, ge=1)
    batch_size: int = Field(10, ge=1)
    neutralize: bool = False


class PointwiseLLM(BaseRanker):
    """Scores every passage independently with yes/no log-probabilities.

    Args:
        engine: an engine with ``Capability.TOKEN_LOGPROBS``.
        prompt: prompt name, path or template (default ``pointwise``; variables
            ``query`` and ``passage``; ``params.yes_token`` / ``params.no_token`` name the
            answer tokens, default ``Yes`` / ``No``).
        max_passage_tokens: passages are cut to this many of the engine's tokens (120).
        batch_size: requests per ``next_token_logprobs_batch`` call.

    Documents come back with ``score`` set to the yes/no margin (``None`` when the engine
    scored neither token; those follow the scored ones) and ``metadata["relevance_probability"]``
    set to ``P(yes) / (P(yes) + P(no))``, the sigmoid of that margin. Ties keep the prior order.
    """

    name = "pointwise"
    config_class: ClassVar[type[PointwiseConfig]] = PointwiseConfig
    config: PointwiseConfig

    def __init__(self, engine: LLM, *, config: PointwiseConfig | None = None, **params: Any) -> None:
        require(engine, Capability.TOKEN_LOGPROBS, "PointwiseLLM", "pointwise scoring reads log P(yes/no)")
        self.engine: LLM = engine
        self.config = self.config_class.build(config, params)
        cfg = self.config
        self.prompt: PromptTemplate = load_prompt(cfg.prompt if cfg.prompt is not None else "pointwise")
        if set(self.prompt.variables) != {"query", "passage"}:
            raise PromptError(
                f"prompt {self.prompt.name}@{self.prompt.version} must declare exactly "
                f"['passage', 'query'] for PointwiseLLM, got {self.prompt.variables}"
            )
        self.max_passage_tokens = cfg.max_passage_tokens
        self.batch_size = cfg.batch_size
        self.neutralize = cfg.neutralize
        self.yes = str(self.prompt.params.get("yes_token", "Yes"))
        self.no = str(self.prompt.params.get("no_token", "No"))

    def _request(self, query: str, doc: Document) -> LogprobRequest:
        words = passage_text(doc, neutralize=self.neutralize).split(" ")
        text = self.engine.tokenizer.truncate(
            " ".join(words[: self.max_passage_tokens]), self.max_passage_tokens
        )
        messages = to_messages(self.prompt.render(query=query, passage=text))
        used = prompt_tokens(self.engine, messages)
        if used + 1 > self.engine.context_window:  # the passage is already cut: the query is too long
            raise ContextOverflow(
                f"pointwise prompt needs {used} tokens (+1 answer token) but the context window is "
                f"{self.engine.context_window}; shorten the query ({len(query)} characters)",
                prompt_tokens=used,
                context_window=self.engine.context_window,
            )
        return LogprobRequest(messages=messages, candidates=[self.yes, self.no])

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        requests = [self._request(query, d) for d in docs]
        results: list[TokenLogprobs] = []
        trace: list[Step] = []
        usage = Usage()
        for b in range(0, len(requests), self.batch_size):
            chunk = requests[b : b + self.batch_size]
            ids = [d.id for d in docs[b : b + self.batch_size]]
            step = Step(
                kind="batch",
                name=self.name,
                prompt=self.prompt.ref,
                input={"start": b, "end": b + len(chunk), "ids": ids},
            )
            with timed_step(step):
                got = list(await self.engine.next_token_logprobs_batch(chunk))
            if len(got) != len(chunk):
                raise EngineError(
                    f"engine returned {len(got)} results for {len(chunk)} requests (an engine bug)"
                )
            for r in got:
                step.usage = step.usage + r.usage
            scores = [yes_no_score(r, self.yes, self.no) for r in got]
            unscored = [i for i, s in zip(ids, scores, strict=True) if s is None]
            step.output = {
                "scores": {
                    i: (round(s, 4) if s is not None else None) for i, s in zip(ids, scores, strict=True)
                },
                "unscored": unscored,
            }
            if unscored:
                step.fallback = True
                step.error = (
                    f"{len(unscored)} of {len(ids)} passages unscored (no finite log-probability "
                    f"for {self.yes!r} or {self.no!r}); they follow the scored ones in prior order"
                )
            usage = usage + step.usage
            results.extend(got)
            trace.append(step)
        scores = [yes_no_score(r, self.yes, self.no) for r in results]
        order = sorted(
            range(len(docs)),
            key=lambda i: (scores[i] is None, -(scores[i] or 0.0) if scores[i] is not None else 0.0, i),
        )
        # P(yes | yes or no): a probability a client can threshold (hoprank.adapters.scoring)
        ranked = [docs[i].with_score(scores[i], relevance_probability=_probability(scores[i])) for i in order]
        return RankerOutput(ranked, usage, trace)


def _probability(margin: float | None) -> float | None:
    if margin is None:
        return None
    return 1.0 / (1.0 + math.exp(-margin)) if margin >= 0 else math.exp(margin) / (1.0 + math.exp(margin))


#: what the registry lists (hoprank.rankers.registry finds it)
RANKER_SPECS = (
    RankerSpec(
        "pointwise",
        "yes/no log-probability per passage",
        lambda: PointwiseLLM,
        default_prompt="pointwise",
        order=50,
    ),
)
