"""The chain bridge: multi-hop retrieval one hop at a time.

For chained sub-questions ("Who wrote the novel Dune?", "Which university did #1
attend?", "When was #2 founded?"; references as in :mod:`hoprank.agents.hops`), hop 1
is searched and answered in a few words from its top passages, the answer replaces
``#1`` in hop 2, which is searched and answered, and so on. Only hops that a later hop
refers to are answered. Sub-questions without any reference form an *implicit* chain
(the ``decompose@1`` order: first the hidden entity, then the rest about it): each hop
after the first is searched with the previous hop's answer appended, as the one-hop
bridge does for its second sub-question. A reference whose hop got no usable answer is
replaced by that hop's own (resolved) question, so the search still names it.

Finally the original question is searched with every hop answer appended (the
pipeline weights that list like the original question's).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from hoprank.agents._common import norm_query, unique
from hoprank.agents.answer import Answer, Answerer
from hoprank.agents.hops import references, restates, substitute
from hoprank.types import Document, Step, Usage

__all__ = ["MAX_ANSWER_WORDS", "Chain", "Hop", "run_chain", "usable_answer"]

MAX_ANSWER_WORDS = 12
Retrieve = Callable[[str], Awaitable[tuple[list[Document], Step]]]


class Hop(BaseModel):
    """One hop of a chain: the sub-question as decomposed, the earlier hops it refers
    to, the question and search it became after substitution, the passages found
    (``ids``) and its short answer (None when no later hop needed one, or when the
    answer was unusable: ``fallback``). ``resolved`` is False when a reference had no
    answer to put in."""

    index: int
    sub_question: str
    refs: list[int] = Field(default_factory=list)
    question: str
    query: str
    ids: list[str] = Field(default_factory=list)
    answer: str | None = None
    answered: bool = False
    resolved: bool = True
    fallback: bool = False


@dataclass
class Chain:
    """The chain bridge's result: the hops, the searches made here with their lists
    (``queries``/``lists``, new to the pipeline), the final search of the question
    with the answers (``main``, also among ``queries``), trace, usage and counters."""

    hops: list[Hop] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    lists: list[list[Document]] = field(default_factory=list)
    main: str | None = None
    trace: list[Step] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)

    @property
    def counters(self) -> dict[str, int]:
        """``hops``, ``hop_answers`` (usable answers), ``hop_fallbacks`` (unusable
        answers), ``unresolved_refs`` (hops searched with a reference left unanswered)."""
        return {
            "hops": len(self.hops),
            "hop_answers": sum(1 for h in self.hops if h.answer is not None),
            "hop_fallbacks": sum(1 for h in self.hops if h.fallback),
            "unresolved_refs": sum(1 for h in self.hops if not h.resolved),
        }


def usable_answer(ans: Answer) -> str | None:
    """A bridge answer fit to join a search: the stripped short answer, or None when the
    answerer fell back, said nothing or wrote more than :data:`MAX_ANSWER_WORDS` words
    (one-hop and chain bridges alike)."""
    answer = ans.answer.strip()
    if ans.fallback or not answer or len(answer.split()) > MAX_ANSWER_WORDS:
        return None
    return answer


def _needed(refs: list[list[int]]) -> set[int]:
    """The hops whose answer a later hop needs (every hop but the last when no hop has
    a reference: the implicit chain)."""
    if any(refs):
        return {k for r in refs for k in r}
    return set(range(1, len(refs)))


async def run_chain(
    question: str,
    sub_questions: list[str],
    *,
    answerer: Answerer,
    retrieve: Retrieve,
    known: dict[str, list[Document]],
    bridge_k: int = 3,
) -> Chain:
    """Run the chain over ``sub_questions`` (restatements of ``question`` skipped).

    ``retrieve`` searches one query (the pipeline's, with its trace step); ``known``
    maps :func:`norm_query` keys of queries already searched to their lists (reused, and
    extended with the searches made here); ``bridge_k`` passages are shown to the
    answerer per hop.
    """
    out = Chain()
    subs = [s for s in unique(sub_questions) if not restates(s, question)]
    if not subs:
        return out
    refs = [references(s, i) for i, s in enumerate(subs, 1)]
    needed, explicit = _needed(refs), any(refs)
    answers: dict[int, str] = {}
    asked: dict[int, str] = {}
    for i, sub in enumerate(subs, 1):
        fill = {k: answers.get(k, asked[k].rstrip("?").strip()) for k in refs[i - 1]}
        hop_q = substitute(sub, fill, i) if explicit else sub
        prev = answers.get(i - 1) if not explicit else None
        query = f"{sub} {prev}" if prev else hop_q
        asked[i] = hop_q
        hop = Hop(
            index=i,
            sub_question=sub,
            refs=refs[i - 1],
            question=hop_q,
            query=query,
            resolved=all(k in answers for k in refs[i - 1]) and (explicit or i == 1 or prev is not None),
        )
        docs = await _search(query, retrieve, known, out)
        hop.ids = [d.id for d in docs]
        step = Step(kind="bridge", name="bridge.hop", input={"hop": i, "sub_question": sub, "query": query})
        if i in needed and docs:
            await _answer(hop, docs[:bridge_k], answerer, step, out)
            if hop.answer is not None:
                answers[i] = hop.answer
        step.output = {
            "question": hop.question,
            "answer": hop.answer,
            "refs": hop.refs,
            "resolved": hop.resolved,
            "ids": hop.ids[:bridge_k],
        }
        out.trace.append(step)
        out.hops.append(hop)
    if answers:
        out.main = " ".join([question, *(answers[k] for k in sorted(answers))])
        await _search(out.main, retrieve, known, out)
    return out


async def _search(
    query: str, retrieve: Retrieve, known: dict[str, list[Document]], out: Chain
) -> list[Document]:
    key = norm_query(query)
    if key in known:
        return known[key]
    docs, step = await retrieve(query)
    out.trace.append(step)
    out.queries.append(query)
    out.lists.append(docs)
    known[key] = docs
    return docs


async def _answer(hop: Hop, docs: list[Document], answerer: Answerer, step: Step, out: Chain) -> None:
    """Answer ``hop.question`` from ``docs``; an empty, failed or long answer is a
    fallback (``hop.answer`` stays None)."""
    step.input["ids"] = [d.id for d in docs]
    t0 = time.perf_counter()
    ans = await answerer.aanswer(hop.question, docs)
    step.seconds = time.perf_counter() - t0
    out.trace.extend(ans.trace)
    out.usage = out.usage + ans.usage
    hop.answered = True
    answer = usable_answer(ans)
    if answer is None:
        hop.fallback = step.fallback = True
        step.error = f"no usable short answer to hop {hop.index}"
        return
    hop.answer = answer
