"""Question decomposition: a multi-hop question becomes simple sub-questions.

The model answers with JSON (``{"sub_questions": [...]}``), validated with pydantic.
Malformed output is repaired (code fences, surrounding prose, trailing commas, a bare
array, a plain numbered list). A sub-question that restates the original question (the
rule of :func:`hoprank.agents.hops.restates`: equal after normalisation, or token-set
Jaccard >= 0.9) is dropped. When the output cannot be parsed, or every sub-question was
a restatement, the model is asked again once (with the parse error, or with the
stricter ``restated`` instruction); if that fails too, the result falls back to the
sub-questions of :func:`~hoprank.agents.hops.rule_split`, or to none, and the trace
says so (``fallback=True``, ``fallback_to``). The original question is never returned
as a sub-question. Engine errors are never swallowed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from hoprank._sync import run_sync
from hoprank.agents._common import gather_bounded, llm_step, norm_query, resolve_prompt, unique
from hoprank.agents._json import parse_model, with_alias
from hoprank.agents.hops import clean_sub_questions, restates, rule_split
from hoprank.errors import InvalidInput, ParseError
from hoprank.llm.base import LLM, Completion, Message
from hoprank.prompts.registry import PromptLike, prompt_param
from hoprank.types import Step, Usage

__all__ = ["Decomposer", "Decomposition", "SubQuestions"]

_MAX_CHARS = 400
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "and",
        "or",
        "is",
        "was",
        "are",
        "were",
        "be",
        "been",
        "who",
        "what",
        "which",
        "whom",
        "whose",
        "where",
        "when",
        "how",
        "did",
        "does",
        "do",
        "that",
        "this",
        "it",
        "its",
        "as",
        "from",
    ]
)
_QUOTED_QUESTION_RE = re.compile(r'"([A-Za-z0-9](?:[^"\\\n]|\\.){7,400}?\?)"')


def _unescape(s: str) -> str:
    try:
        return str(json.loads(f'"{s}"'))
    except json.JSONDecodeError:
        return s


def _content_words(text: str) -> set[str]:
    return {w for w in norm_query(text).split() if w not in _STOP}


def _bridge_question(find_first: str, subs: list[str], template: str) -> str | None:
    """``template`` with ``{entity}`` = ``find_first`` (``Who or what is {entity}?`` in
    ``decompose@1``) unless a sub-question already asks about it."""
    target = find_first.strip().rstrip("?.").strip()
    if not target:
        return None
    question = template.replace("{entity}", target)
    tw = _content_words(question)
    if not tw:
        return None
    for sq in subs:
        sw = _content_words(sq)
        if sw and len(tw & sw) / len(tw | sw) >= 0.8:
            return None
    return question


class SubQuestions(BaseModel):
    """The schema of the decomposer's JSON output.

    ``find_first`` (optional) describes the hidden entity a bridge question is about
    ("the director of Inception"); the built-in prompt asks for it before the list.
    """

    sub_questions: list[str]
    find_first: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = with_alias(
            data, "sub_questions", ("subquestions", "sub-questions", "questions", "subQuestions")
        )
        ff = data.get("find_first")
        data["find_first"] = ff.strip() if isinstance(ff, str) and ff.strip() else None
        return data

    @field_validator("sub_questions", mode="before")
    @classmethod
    def _items(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        out = []
        for item in v:
            if isinstance(item, dict):
                item = next((item[k] for k in ("question", "sub_question", "text") if k in item), item)
            out.append(item)
        return out

    @field_validator("sub_questions")
    @classmethod
    def _well_formed(cls, v: list[str]) -> list[str]:
        cleaned = [s.strip() for s in v]
        for s in cleaned:
            if not s:
                raise ValueError("empty sub-question")
            if len(s) > _MAX_CHARS:
                raise ValueError(f"sub-question longer than {_MAX_CHARS} characters")
        return cleaned


ReaskReason = Literal["parse", "restated"]
FallbackTo = Literal["rule_split", "none"]


class Decomposition(BaseModel):
    """A question and its sub-questions (never the question itself).

    ``restated`` counts the sub-questions dropped as restatements of the question (all
    calls together); ``reask_reason`` says why the model was asked a second time
    (``reasked``); ``fallback`` is True when no reply could be used, and ``fallback_to``
    says what stands in: the :func:`~hoprank.agents.hops.rule_split` sub-questions or
    none (the question alone is then searched). :attr:`counters` sums them up.
    """

    question: str
    sub_questions: list[str]
    fallback: bool = False
    reasked: bool = False
    restated: int = 0
    reask_reason: ReaskReason | None = None
    fallback_to: FallbackTo | None = None
    usage: Usage = Field(default_factory=Usage)
    trace: list[Step] = Field(default_factory=list)

    @property
    def counters(self) -> dict[str, int]:
        """Events of this decomposition as 0/1 flags and counts, ready to be summed over
        a run: ``restated`` (sub-questions dropped), ``reask_parse``,
        ``reask_restated``, ``fallback_rule_split``, ``fallback_none``."""
        return {
            "restated": self.restated,
            "reask_parse": int(self.reask_reason == "parse"),
            "reask_restated": int(self.reask_reason == "restated"),
            "fallback_rule_split": int(self.fallback_to == "rule_split"),
            "fallback_none": int(self.fallback_to == "none"),
        }

    @property
    def queries(self) -> list[str]:
        """The original question followed by the distinct sub-questions."""
        return unique([self.question, *self.sub_questions])

    @property
    def n_new(self) -> int:
        """How many sub-questions differ from the original question."""
        q = norm_query(self.question)
        return len({norm_query(s) for s in self.sub_questions} - {q})


class Decomposer:
    """Splits a question into sub-questions with any engine (only ``generate`` is used).

    ``prompt`` is a name, path, mapping or :class:`PromptTemplate` with variables
    ``question`` and ``max_sub_questions`` (default ``decompose``; ``decompose-chain``
    asks for chained sub-questions with ``#k`` references). ``reask`` allows one more
    call when the output cannot be repaired (with the parse error) or only restated the
    question (with ``params.restated``); a template with ``params.references: true``
    gets its rule-split fallback chained too. With
    ``bridge_question``, a ``find_first`` entity that no sub-question asks about becomes
    the first sub-question (``params.bridge_question``, "Who or what is {entity}?" in
    ``decompose@1``): small models name the hidden bridge entity reliably but often copy
    the whole question as the only sub-question.
    """

    def __init__(
        self,
        engine: LLM,
        *,
        prompt: PromptLike | None = None,
        max_sub_questions: int = 4,
        max_tokens: int = 200,
        temperature: float = 0.0,
        reask: bool = True,
        bridge_question: bool = True,
        concurrency: int = 4,
    ) -> None:
        if max_sub_questions < 1:
            raise InvalidInput("max_sub_questions must be >= 1")
        self.engine = engine
        self.prompt = resolve_prompt(prompt, "decompose")
        self.max_sub_questions = max_sub_questions
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.reask = reask
        self.bridge_question = bridge_question
        self.concurrency = concurrency

    def _parse(self, text: str, continuation: str, step: Step, question: str) -> list[str]:
        """The usable sub-questions of a reply (restatements of ``question`` dropped and
        listed in ``step.output["restated"]``); raises :class:`ParseError`."""
        try:
            json.loads(text)
            repaired = False
        except json.JSONDecodeError:
            repaired = True
        salvaged = False
        find_first: str | None = None
        try:
            parsed = parse_model(text, SubQuestions, list_field="sub_questions")
            found, find_first = parsed.sub_questions, parsed.find_first
        except ParseError as first:
            # The model may have ignored the prefill and written the whole object itself.
            try:
                if continuation == text:
                    raise
                parsed = parse_model(continuation, SubQuestions, list_field="sub_questions")
                found, find_first = parsed.sub_questions, parsed.find_first
            except ParseError:
                # Last resort: the quoted questions of an otherwise broken JSON text.
                found = unique(_unescape(q) for q in _QUOTED_QUESTION_RE.findall(text))
                if not found:
                    raise first from None
                salvaged = True
        added = None
        if find_first and self.bridge_question:
            added = _bridge_question(
                find_first, unique(found), str(prompt_param(self.prompt, "bridge_question", "decompose@1"))
            )
        if added and restates(added, question):
            added = None
        # repeats and restatements out, the bridge question in front, #k renumbered
        subs, dropped = clean_sub_questions(found, question, first=added)
        subs = subs[: self.max_sub_questions]
        step.output = {
            "sub_questions": subs,
            "find_first": find_first,
            "added_bridge_question": added,
            "repaired": repaired,
            "salvaged": salvaged,
            "restated": dropped,
        }
        return subs

    async def adecompose(self, question: str) -> Decomposition:
        """Decompose one question."""
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput("question must be a non-empty string")
        question = question.strip()
        variables = {"question": question, "max_sub_questions": self.max_sub_questions}
        text, step, comp = await self._call(variables, "decompose")
        subs, reason, detail = self._attempt(text, comp.text, step, question)
        if reason is None:
            return self._result(question, subs, [step])
        if not self.reask:
            return self._fallback(question, [step], reask_reason=None)
        text2, step2, comp2 = await self._reask(variables, text, reason, detail)
        subs2, reason2, _ = self._attempt(text2, comp2.text, step2, question)
        if reason2 is not None:
            return self._fallback(question, [step, step2], reask_reason=reason)
        return self._result(question, subs2, [step, step2], reask_reason=reason)

    def _attempt(
        self, text: str, continuation: str, step: Step, question: str
    ) -> tuple[list[str], ReaskReason | None, str]:
        """Parse one reply: its sub-questions, and why it cannot be used (``parse``:
        the error is in ``step.error``; ``restated``: every sub-question restated the
        question) or None, with the detail to show the model."""
        try:
            subs = self._parse(text, continuation, step, question)
        except ParseError as e:
            step.error = str(e)
            return [], "parse", str(e)
        if not subs and step.output["restated"]:
            step.error = "every sub-question restates the original question"
            return [], "restated", step.error
        return subs, None, ""

    @staticmethod
    def _restated(trace: list[Step]) -> int:
        return sum(len(s.output.get("restated", ())) for s in trace)

    def _result(
        self, question: str, subs: list[str], trace: list[Step], *, reask_reason: ReaskReason | None = None
    ) -> Decomposition:
        usage = Usage()
        for s in trace:
            usage = usage + s.usage
        return Decomposition(
            question=question,
            sub_questions=subs,
            reasked=reask_reason is not None,
            reask_reason=reask_reason,
            restated=self._restated(trace),
            usage=usage,
            trace=trace,
        )

    async def _call(
        self, variables: dict[str, Any], name: str, **kwargs: Any
    ) -> tuple[str, Step, Completion]:
        return await llm_step(
            self.engine,
            self.prompt,
            variables,
            name=name,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            **kwargs,
        )

    async def _reask(
        self, variables: dict[str, Any], text: str, reason: ReaskReason, detail: str
    ) -> tuple[str, Step, Completion]:
        """Show the model its unusable answer and what was wrong with it: the parse
        error (``params.repair``) or, when it only restated the question, the stricter
        ``params.restated`` instruction (``{question}`` filled in)."""
        if reason == "parse":
            message = str(prompt_param(self.prompt, "repair", "decompose@1")).replace("{error}", detail)
        else:
            message = str(prompt_param(self.prompt, "restated", "decompose-chain@1"))
            message = message.replace("{question}", str(variables["question"]))
        extra: list[Message] = [
            {"role": "assistant", "content": text},
            {"role": "user", "content": message},
        ]
        trace_input = {**variables, "reason": reason, "error": detail}
        return await self._call(variables, "decompose.reask", trace_input=trace_input, extra_messages=extra)

    def _fallback(
        self, question: str, trace: list[Step], *, reask_reason: ReaskReason | None
    ) -> Decomposition:
        """No usable reply: the :func:`rule_split` sub-questions, or none; marked on the
        last step (``fallback``, ``output["fallback_to"]``)."""
        template = str(prompt_param(self.prompt, "bridge_question", "decompose@1"))
        chained = bool(self.prompt.params.get("references", False))
        subs = rule_split(question, template=template, chained=chained, limit=self.max_sub_questions)
        to: FallbackTo = "rule_split" if subs else "none"
        last = trace[-1]
        last.fallback = True
        last.output = {**last.output, "sub_questions": subs, "fallback_to": to}
        result = self._result(question, subs, trace, reask_reason=reask_reason)
        return result.model_copy(update={"fallback": True, "fallback_to": to})

    async def adecompose_many(self, questions: Sequence[str]) -> list[Decomposition]:
        """Decompose several questions, at most ``concurrency`` at a time, in order."""
        return await gather_bounded((self.adecompose(q) for q in questions), self.concurrency)

    def decompose(self, question: str) -> Decomposition:
        """Sync facade of :meth:`adecompose`."""
        return run_sync(self.adecompose(question))
