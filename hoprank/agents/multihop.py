"""The iterative multi-hop agent: retrieve, read, note the bridge fact, search again,
answer — under an explicit step/token/time budget.

Protocol (works with every engine, only ``generate`` is used): each step the model sees
the question, the passages found so far, its notes and the result of its last action,
and replies with one JSON object::

    {"notes": "...", "action": "search", "query": "..."}
    {"notes": "...", "action": "answer", "answer": "...", "citations": ["doc-id", ...]}

Retriever exceptions, unusable replies and repeated queries go back to the model as the
"result of the last action" instead of crashing the run. Engine errors propagate.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from hoprank._sync import run_sync
from hoprank.agents._common import (
    check_documents,
    format_passages,
    gather_bounded,
    llm_step,
    norm_query,
    resolve_prompt,
)
from hoprank.agents._json import parse_model
from hoprank.agents.action import AgentAction
from hoprank.errors import InvalidInput, ParseError, PromptError
from hoprank.llm.base import LLM, Completion
from hoprank.prompts.registry import PromptLike, load_prompt
from hoprank.rankers.base import Ranker
from hoprank.rankers.config import ComponentConfig
from hoprank.runs import rrf_fuse
from hoprank.tools.base import Retriever
from hoprank.types import Document, Step, Usage

__all__ = ["AgentResult", "Budget", "MultiHopAgent", "MultiHopConfig"]

T = TypeVar("T")
AgentState = Literal["answered", "budget_exhausted", "failed"]


class Budget(BaseModel):
    """Limits of one agent run: LLM decision steps, total tokens, wall-clock seconds
    (``None`` = unlimited).

    ``max_seconds`` is hard: a search, model call or final rerank still running when it
    passes is cancelled (the final rerank then leaves the fused order). ``max_tokens`` is
    checked before each model call, so the call that crosses it completes: a run can end
    up to one call's prompt and completion (plus a final rerank's tokens) above it."""

    model_config = ConfigDict(frozen=True)

    max_steps: int = Field(default=5, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_seconds: float | None = Field(default=None, gt=0)


class AgentResult(BaseModel):
    """The outcome of one agent run.

    ``citations`` only holds ids of retrieved documents (others are listed in
    ``invalid_citations``); ``evidence`` is every retrieved document, cited ones first,
    then in fused retrieval order (or the ranker's order); ``reason`` says why a run
    ended without an answer.
    """

    question: str
    state: AgentState
    answer: str | None = None
    citations: list[str] = Field(default_factory=list)
    invalid_citations: list[str] = Field(default_factory=list)
    evidence: list[Document] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    queries: list[str] = Field(default_factory=list)
    steps: int = 0
    reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    trace: list[Step] = Field(default_factory=list)


class _Run:
    """Mutable state of one run."""

    def __init__(self, question: str) -> None:
        self.question = question
        self.t0 = time.perf_counter()
        self.trace: list[Step] = []
        self.usage = Usage()
        self.docs: dict[str, Document] = {}
        self.order: list[str] = []  # newest first, for display
        self.lists: list[list[Document]] = []
        self.queries: list[str] = []
        self.seen: set[str] = set()
        self.notes: list[str] = []
        self.observation = ""
        self.steps = 0
        self.bad = 0  # unusable replies or repeated queries in a row

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


_FIELD = re.compile(r"\{(\w+)\}")


class _Timeout(Exception):
    """The run's time budget ran out."""


class _InnerTimeout(Exception):
    """A ``TimeoutError`` raised by the awaited work itself (not the budget)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def _tag_timeouts(aw: Awaitable[T]) -> T:
    try:
        return await aw
    except asyncio.TimeoutError as e:
        raise _InnerTimeout(e) from e


class MultiHopConfig(ComponentConfig):
    """The numeric parameters of :class:`MultiHopAgent`: ``budget``, ``k`` (documents
    per search), ``initial_search``, ``max_passages`` and ``passage_words`` (what the
    model is shown), ``max_tokens`` per step, ``max_bad_replies``, ``rrf_k``,
    ``temperature`` and ``concurrency``."""

    budget: Budget = Field(default_factory=Budget)
    k: int = 5
    initial_search: bool = True
    max_passages: int = 8
    passage_words: int = 60
    max_tokens: int = 200
    max_bad_replies: int = 3
    rrf_k: int = 60
    temperature: float = 0.0
    concurrency: int = 2


class MultiHopAgent:
    """Iterative retrieval for bridge questions with any engine and any retriever.

    Each step is one LLM call; searches run ``retriever.search(query, k)``. With
    ``initial_search`` the question itself is searched before the first step. The run
    stops when the model answers (``answered``), a budget runs out
    (``budget_exhausted``), or the model is stuck — ``max_bad_replies`` unusable
    replies or repeated queries in a row (``failed``).
    """

    def __init__(
        self,
        engine: LLM,
        retriever: Retriever,
        *,
        config: MultiHopConfig | None = None,
        prompt: PromptLike | None = None,
        ranker: Ranker | None = None,
        **params: Any,
    ) -> None:
        """``params``: the fields of :class:`MultiHopConfig` (or a ready ``config``)."""
        if params.get("budget", 0) is None:  # budget=None: the default budget, as before
            params.pop("budget")
        cfg = MultiHopConfig.build(config, params)
        if cfg.k < 1 or cfg.max_passages < 1 or cfg.max_bad_replies < 1:
            raise InvalidInput("k, max_passages and max_bad_replies must be >= 1")
        self.config = cfg
        self.engine = engine
        self.retriever = retriever
        self.budget = cfg.budget
        self.k = cfg.k
        self.prompt = resolve_prompt(prompt, "agent-step")
        # the observation texts: the prompt's params.observations over agent-step@1's
        own = self.prompt.params.get("observations", {})
        if not isinstance(own, dict):
            raise PromptError(f"prompt {self.prompt.ref}: params.observations must be a mapping")
        self.observations: dict[str, str] = {**load_prompt("agent-step@1").params["observations"], **own}
        self.ranker = ranker
        self.initial_search = cfg.initial_search
        self.max_passages = cfg.max_passages
        self.passage_words = cfg.passage_words
        self.max_tokens = cfg.max_tokens
        self.max_bad_replies = cfg.max_bad_replies
        self.rrf_k = cfg.rrf_k
        self.temperature = cfg.temperature
        self.concurrency = cfg.concurrency

    # -- helpers -------------------------------------------------------------------
    async def _within(self, run: _Run, aw: Awaitable[T]) -> T:
        """Await under the remaining time budget (raises ``_Timeout``)."""
        if self.budget.max_seconds is None:
            return await aw
        left = self.budget.max_seconds - run.elapsed()
        if left <= 0:
            if asyncio.iscoroutine(aw):
                aw.close()
            raise _Timeout
        try:
            return await asyncio.wait_for(_tag_timeouts(aw), timeout=left)
        except _InnerTimeout as e:  # the work's own timeout, not the budget's
            raise e.error from None
        except asyncio.TimeoutError:
            raise _Timeout from None

    def _observe(self, key: str, **fields: object) -> str:
        """The observation text ``key`` (see ``params.observations`` of ``agent-step@1``)
        with ``{field}`` placeholders filled in."""
        return _FIELD.sub(
            lambda m: str(fields[m[1]]) if m[1] in fields else m[0], str(self.observations[key])
        )

    def _budget_left(self, run: _Run) -> str | None:
        b = self.budget
        if run.steps >= b.max_steps:
            return f"max_steps={b.max_steps} reached"
        if b.max_tokens is not None and run.usage.total_tokens >= b.max_tokens:
            return f"max_tokens={b.max_tokens} reached ({run.usage.total_tokens} used)"
        if b.max_seconds is not None and run.elapsed() >= b.max_seconds:
            return f"max_seconds={b.max_seconds} reached"
        return None

    async def _search(self, run: _Run, query: str, *, name: str) -> None:
        run.queries.append(query)
        run.seen.add(norm_query(query))
        step = Step(kind="retrieve", name=name, input={"query": query, "k": self.k})
        run.trace.append(step)
        t0 = time.perf_counter()
        try:
            docs = await self._within(run, self.retriever.search(query, self.k))
        except _Timeout:
            step.seconds = time.perf_counter() - t0
            step.error = "time budget ran out during the search"
            raise
        except Exception as e:  # a tool error is an observation for the model, not a crash
            step.seconds = time.perf_counter() - t0
            step.error = f"{type(e).__name__}: {e}"
            run.observation = self._observe("search_error", query=query, error=step.error)
            return
        step.seconds = time.perf_counter() - t0
        try:  # a programming error in the retriever, not a tool failure to observe
            check_documents(docs, self.retriever)
        except InvalidInput as e:
            step.error = str(e)
            raise
        new = [d.id for d in docs if d.id not in run.docs]
        for d in docs:
            run.docs.setdefault(d.id, d)
        run.order = [d.id for d in docs] + [i for i in run.order if i not in {d.id for d in docs}]
        run.lists.append(docs)
        step.output = {"ids": [d.id for d in docs], "new": new}
        if not docs:
            run.observation = self._observe("no_results", query=query)
        else:
            run.observation = self._observe("results", query=query, n=len(docs), new=len(new))

    def _variables(self, run: _Run) -> dict[str, Any]:
        shown = [run.docs[i] for i in run.order[: self.max_passages]]
        return {
            "question": run.question,
            "passages": format_passages(shown, max_words=self.passage_words) or "(none)",
            "notes": " ".join(run.notes[-5:]) or "(none)",
            "searches": " | ".join(run.queries) or "(none)",
            "observation": run.observation,
            "steps_left": self.budget.max_steps - run.steps,
        }

    async def _finish(
        self,
        run: _Run,
        state: AgentState,
        *,
        answer: str | None = None,
        citations: Sequence[str] = (),
        reason: str | None = None,
    ) -> AgentResult:
        valid = [c for c in dict.fromkeys(citations) if c in run.docs]
        invalid = [c for c in dict.fromkeys(citations) if c not in run.docs]
        ordered = rrf_fuse(run.lists, k=self.rrf_k) if run.lists else []
        if self.ranker is not None and len(ordered) > 1:
            try:
                ranking = await self._within(run, self.ranker.arank(run.question, ordered))
            except _Timeout:
                run.trace.append(
                    Step(
                        kind="rerank",
                        name="agent.rerank",
                        input={"n": len(ordered)},
                        fallback=True,
                        error=f"max_seconds={self.budget.max_seconds} reached: evidence left in fused order",
                    )
                )
            else:
                run.trace.extend(ranking.trace)
                run.usage = run.usage + ranking.usage.model_copy(update={"seconds": 0.0})
                ordered = list(ranking.documents)
        by_id = {d.id: d for d in ordered}
        evidence = [by_id.get(c, run.docs[c]) for c in valid] + [d for d in ordered if d.id not in valid]
        if reason is not None:
            run.trace.append(Step(kind="stop", name=state, error=reason))
        usage = run.usage.model_copy(update={"seconds": run.elapsed()})
        return AgentResult(
            question=run.question,
            state=state,
            answer=answer,
            citations=valid,
            invalid_citations=invalid,
            evidence=evidence,
            notes=run.notes,
            queries=run.queries,
            steps=run.steps,
            reason=reason,
            usage=usage,
            trace=run.trace,
        )

    # -- the loop ------------------------------------------------------------------
    async def arun(self, question: str) -> AgentResult:
        """Answer one question (see the class docstring for the stopping rules)."""
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput("question must be a non-empty string")
        run = _Run(question.strip())
        run.observation = self._observe("start")
        try:
            if self.initial_search:
                await self._search(run, run.question, name="retrieve.initial")
            while True:
                reason = self._budget_left(run)
                if reason is not None:
                    return await self._finish(run, "budget_exhausted", reason=reason)
                result = await self._turn(run)
                if result is not None:
                    return result
        except _Timeout:
            return await self._finish(
                run, "budget_exhausted", reason=f"max_seconds={self.budget.max_seconds} reached"
            )

    async def _ask(self, run: _Run) -> tuple[str, Step, Completion]:
        """One model call on the run's state (its step joins the trace)."""
        variables = self._variables(run)
        text, step, comp = await self._within(
            run,
            llm_step(
                self.engine,
                self.prompt,
                variables,
                name="agent.step",
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                trace_input={**variables, "passages": run.order[: self.max_passages]},
                trace=run.trace,
            ),
        )
        run.steps += 1
        run.usage = run.usage + step.usage.model_copy(update={"seconds": 0.0})
        return text, step, comp

    async def _turn(self, run: _Run) -> AgentResult | None:
        """Ask the model, then act on its reply: the result when the run ends, else None."""
        text, step, comp = await self._ask(run)
        try:
            action = self._parse(text, comp.text)
        except ParseError as e:
            step.error = str(e)
            run.bad += 1
            run.observation = self._observe("bad_reply", error=e)
            if run.bad >= self.max_bad_replies:
                return await self._finish(
                    run, "failed", reason=f"{run.bad} unusable replies in a row; last: {e}"
                )
            return None
        step.output = action.model_dump()
        if action.notes.strip() and action.notes.strip() not in run.notes:
            run.notes.append(action.notes.strip())
        if action.action == "answer":
            return await self._finish(
                run, "answered", answer=str(action.answer).strip(), citations=action.citations
            )
        query = str(action.query).strip()
        if norm_query(query) in run.seen:
            run.bad += 1
            step.error = f"repeated query: {query!r}"
            run.observation = self._observe("repeated", query=query)
            if run.bad >= self.max_bad_replies:
                return await self._finish(
                    run, "failed", reason=f"stuck: {run.bad} unusable replies or repeated queries in a row"
                )
            return None
        run.bad = 0
        await self._search(run, query, name="retrieve")
        return None

    def _parse(self, text: str, continuation: str) -> AgentAction:
        try:
            return parse_model(text, AgentAction)
        except ParseError as first:
            if continuation == text:
                raise
            try:
                return parse_model(continuation, AgentAction)
            except ParseError:
                raise first from None

    async def arun_many(self, questions: Sequence[str]) -> list[AgentResult]:
        """Run several questions, at most ``concurrency`` at a time, in order."""
        return await gather_bounded((self.arun(q) for q in questions), self.concurrency)

    def run(self, question: str) -> AgentResult:
        """Sync facade of :meth:`arun`."""
        return run_sync(self.arun(question))

    @classmethod
    def from_preset(cls, name: str, engine: LLM, retriever: Retriever, **overrides: Any) -> MultiHopAgent:
        """The agent of a named QA system (``d``: 4 steps of 5 passages), as the benchmark
        runs it; ``overrides`` as ``hoprank eval -p`` (``max_steps=6``, ``k=8``)."""
        from hoprank.agents.presets import apply_overrides, preset

        system = apply_overrides(preset(name), overrides)
        if system.kind != "agent":
            raise InvalidInput(f"QA system {name!r} is a pipeline; use DecomposeRetrieveRerank.from_preset")
        ranker = None
        if system.ranker is not None:
            from hoprank.rankers import make_ranker

            ranker = make_ranker(system.ranker, engine, **system.ranker_params)
        prompt = system.prompts.get("agent")
        return cls(engine, retriever, config=system.agent, prompt=prompt, ranker=ranker)
