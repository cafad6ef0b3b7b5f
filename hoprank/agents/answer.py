"""Answering from evidence with cited document ids.

The model cites passages as ``[doc-id]``; markers are parsed and validated against the
evidence ids (unknown ids are kept apart in ``invalid_citations``). ``mode="short"``
asks for a few words (for exact-match / F1 evaluation) and strips the markers and
boilerplate from the answer text.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from hoprank._sync import run_sync
from hoprank.agents._common import format_passages, gather_bounded, llm_step, resolve_prompt
from hoprank.errors import InvalidInput
from hoprank.llm.base import LLM
from hoprank.prompts.registry import PromptLike
from hoprank.types import Document, Step, Usage

__all__ = ["Answer", "Answerer", "clean_short_answer", "parse_citations"]

_MARKER_RE = re.compile(r"\[([^\[\]\n]{1,200})\]")
# a citation cut by max_tokens at the end of the line: " [hpdev-01011" (no closing bracket)
_CUT_MARKER_RE = re.compile(r"\s*\[[^\[\]\n]{0,200}$")
_ANSWER_PREFIX_RE = re.compile(r"^\s*(?:final\s+)?(?:short\s+)?answer\s*[:：-]\s*", re.IGNORECASE)


def _clean_id(s: str) -> str:
    return s.strip().strip("'\"`").strip()


def _marker_ids(content: str, valid_ids: Collection[str]) -> list[str]:
    """The ids in one marker's content. An id may itself hold a comma, a semicolon or
    quotes (titles as ids: ``Clinton, Minnesota``, ``"Weird Al" Yankovic``), so the
    longest run of comma/semicolon-separated pieces that is a valid id wins; pieces
    left over are ids on their own."""
    tokens = re.split(r"([,;])", content)  # piece, sep, piece, sep, ...
    n = (len(tokens) + 1) // 2
    out: list[str] = []
    i = 0
    while i < n:
        for j in range(n - 1, i - 1, -1):
            raw = "".join(tokens[2 * i : 2 * j + 1])
            cand = raw.strip() if raw.strip() in valid_ids else _clean_id(raw)
            if cand in valid_ids or j == i:
                if cand:
                    out.append(cand)
                i = j + 1
                break
    return out


def parse_citations(text: str, valid_ids: Collection[str]) -> tuple[list[str], list[str]]:
    """``[id]`` / ``[id1, id2]`` markers in ``text``, split into ids present in
    ``valid_ids`` and ids that are not; each list in order of first appearance."""
    valid: list[str] = []
    invalid: list[str] = []
    for m in _MARKER_RE.finditer(text):
        for cid in _marker_ids(m.group(1), valid_ids):
            bucket = valid if cid in valid_ids else invalid
            if cid not in bucket:
                bucket.append(cid)
    return valid, invalid


def clean_short_answer(text: str) -> str:
    """A few-words answer from raw output: first non-empty line, markers (also one cut
    off at the end) and an ``Answer:`` prefix removed, quotes and a final period stripped."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    line = _ANSWER_PREFIX_RE.sub("", line)
    line = _MARKER_RE.sub("", line)
    line = _CUT_MARKER_RE.sub("", line)
    line = " ".join(line.split())
    prev = None
    while prev != line:
        prev = line
        line = line.strip().strip("\"'`*").rstrip(".").strip()
    return line


class Answer(BaseModel):
    """An answer with the evidence ids it cites. ``fallback`` is True when the model
    gave no usable answer text (the answer is then empty)."""

    question: str
    answer: str
    citations: list[str] = Field(default_factory=list)
    invalid_citations: list[str] = Field(default_factory=list)
    mode: Literal["long", "short"] = "long"
    fallback: bool = False
    usage: Usage = Field(default_factory=Usage)
    trace: list[Step] = Field(default_factory=list)


class Answerer:
    """Answers a question from evidence documents with any engine.

    ``mode="long"`` (prompt ``answer``) gives a cited answer; ``mode="short"`` (prompt
    ``answer-short``) a few words. ``prompt`` overrides the template (variables
    ``question`` and ``passages``); passages are cut to ``passage_words`` words.
    """

    def __init__(
        self,
        engine: LLM,
        *,
        mode: Literal["long", "short"] = "long",
        prompt: PromptLike | None = None,
        max_tokens: int | None = None,
        passage_words: int = 120,
        temperature: float = 0.0,
        concurrency: int = 4,
    ) -> None:
        if mode not in ("long", "short"):
            raise InvalidInput(f"mode must be 'long' or 'short', got {mode!r}")
        self.engine = engine
        self.mode: Literal["long", "short"] = mode
        self.prompt = resolve_prompt(prompt, "answer" if mode == "long" else "answer-short")
        self.max_tokens = max_tokens or (256 if mode == "long" else 32)
        self.passage_words = passage_words
        self.temperature = temperature
        self.concurrency = concurrency

    async def aanswer(self, question: str, evidence: Sequence[Document]) -> Answer:
        """Answer ``question`` from ``evidence`` (best first)."""
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput("question must be a non-empty string")
        evidence = list(evidence)
        ids = [d.id for d in evidence]
        passages = format_passages(evidence, max_words=self.passage_words) or "(no passages)"
        text, step, _ = await llm_step(
            self.engine,
            self.prompt,
            {"question": question.strip(), "passages": passages},
            name=f"answer.{self.mode}",
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            trace_input={"question": question.strip(), "evidence": ids, "mode": self.mode},
        )
        citations, invalid = parse_citations(text, set(ids))
        answer = clean_short_answer(text) if self.mode == "short" else text.strip()
        fallback = not answer
        step.output = {"answer": answer, "citations": citations, "invalid_citations": invalid}
        if fallback:
            step.fallback = True
            step.error = "empty answer"
        return Answer(
            question=question.strip(),
            answer=answer,
            citations=citations,
            invalid_citations=invalid,
            mode=self.mode,
            fallback=fallback,
            usage=step.usage,
            trace=[step],
        )

    async def aanswer_many(self, items: Sequence[tuple[str, Sequence[Document]]]) -> list[Answer]:
        """Answer several (question, evidence) pairs, at most ``concurrency`` at a time."""
        return await gather_bounded((self.aanswer(q, ev) for q, ev in items), self.concurrency)

    def answer(self, question: str, evidence: Sequence[Document]) -> Answer:
        """Sync facade of :meth:`aanswer`."""
        return run_sync(self.aanswer(question, evidence))
