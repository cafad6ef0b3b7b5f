"""Text rules of multi-hop decomposition: restatements, ``#k`` references, a rule split.

**Restatement rule** (fixed before any measurement, issue 23): a sub-question restates
the original question when, after :func:`~hoprank.agents._common.norm_query` (lower
case, punctuation to spaces), the two texts are equal, or the Jaccard index of their
token sets is at least :data:`RESTATE_JACCARD` (0.9). Stopwords count: "Who is X?" and
"What is X?" differ. The :class:`~hoprank.agents.decompose.Decomposer` drops such
sub-questions, re-asks once when none is left, then falls back to :func:`rule_split`.

**References**: a chained sub-question names the answer of an earlier one as ``#k``,
``[k]``, ``[#k]`` or ``{k}`` (1-based). Only ``k`` smaller than the sub-question's own
position is a reference (``#1`` in the first sub-question is text, "the #1 hit").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from hoprank.agents._common import norm_query, unique

__all__ = [
    "RESTATE_JACCARD",
    "clean_sub_questions",
    "has_references",
    "references",
    "restates",
    "rule_split",
    "substitute",
    "token_jaccard",
]

RESTATE_JACCARD = 0.9

_REF_RE = re.compile(r"\[#?(\d{1,2})\]|\{#?(\d{1,2})\}|#(\d{1,2})(?!\d)")
_AUX = r"(?:Are|Were|Is|Was|Do|Did|Does|Have|Has|Had)"
_NAME = r"(?:\"[^\"]+\"|(?:[A-Z0-9][\w'’.&:-]*)(?:\s+(?:of\s+|the\s+|and\s+|de\s+)?[A-Z0-9][\w'’.&:-]*)*)"
# "Were Scott Derrickson and Ed Wood of the same nationality?"
_PAIR_RE = re.compile(rf"^{_AUX}\s+(?:both\s+)?(?P<a>{_NAME})\s+and\s+(?P<b>{_NAME})\b")
# "Which magazine was started first, Arthur's Magazine or First for Women?"
_EITHER_RE = re.compile(r",\s*(?P<a>[^,?]+?)\s+or\s+(?P<b>[^,?]+?)\s*\??\s*$")
# "the woman who portrayed Corliss Archer in the film Kiss and Tell"
_RELATIVE_RE = re.compile(
    r"\b(?P<desc>(?:[Tt]he|[Aa]n?)\s+(?:[\w'’-]+\s+){0,3}?(?:who|that|which|whose)\s+[^,?]+)"
)
# 'the director of the romantic comedy "Big Stone Gap"'
_OF_RE = re.compile(
    rf"\b(?P<desc>[Tt]he\s+(?:[a-z][\w-]*\s+){{1,2}}of\s+(?:the\s+)?(?:[a-z][\w-]*\s+){{0,2}}{_NAME})"
)


def token_jaccard(a: str, b: str) -> float:
    """Jaccard index of the normalised token sets of ``a`` and ``b`` (0 when either is empty)."""
    ta, tb = set(norm_query(a).split()), set(norm_query(b).split())
    if not ta or not tb:
        return 0.0
    return len(ta & tb) / len(ta | tb)


def restates(sub: str, question: str) -> bool:
    """Whether ``sub`` restates ``question`` (the rule in the module docstring)."""
    a, b = norm_query(sub), norm_query(question)
    if not a or not b:
        return False
    return a == b or token_jaccard(a, b) >= RESTATE_JACCARD


def _ref_matches(text: str, position: int | None) -> list[tuple[re.Match[str], int]]:
    out = []
    for m in _REF_RE.finditer(text):
        k = int(next(g for g in m.groups() if g is not None))
        if k >= 1 and (position is None or k < position):
            out.append((m, k))
    return out


def references(text: str, position: int | None = None) -> list[int]:
    """The hops ``text`` refers to, in order of first appearance, without repeats. With
    ``position`` (the 1-based place of ``text`` in its chain) only earlier hops count."""
    return list(dict.fromkeys(k for _, k in _ref_matches(text, position)))


def has_references(sub_questions: Sequence[str]) -> bool:
    """Whether any sub-question refers to an earlier one."""
    return any(references(s, i) for i, s in enumerate(sub_questions, 1))


def substitute(text: str, fill: Mapping[int, str], position: int | None = None) -> str:
    """``text`` with each reference ``k`` in ``fill`` replaced by ``fill[k]`` (others kept)."""
    parts: list[str] = []
    last = 0
    for m, k in _ref_matches(text, position):
        if k in fill:
            parts.extend([text[last : m.start()], fill[k]])
            last = m.end()
    parts.append(text[last:])
    return " ".join("".join(parts).split())


def clean_sub_questions(
    items: Sequence[str], question: str, *, first: str | None = None
) -> tuple[list[str], list[str]]:
    """``items`` (a model's sub-questions) with repeats and restatements of ``question``
    removed, ``first`` (an added bridge sub-question) put in front, and every reference
    renumbered to the new places: ``(kept, dropped_restatements)``. A reference to a
    dropped restatement becomes that sub-question's text (the answer it stood for)."""
    texts = [" ".join(t.split()) for t in items]
    out = [first] if first else []
    new_place: dict[int, int] = {}
    seen: dict[str, int] = {}
    dropped: list[str] = []
    gone: set[str] = set()
    for i, text in enumerate(texts, 1):
        key = norm_query(text)
        if not key or key in gone:
            continue
        if key in seen:
            new_place[i] = seen[key]
            continue
        fill = {
            k: f"#{new_place[k]}" if k in new_place else texts[k - 1].rstrip("?") for k in references(text, i)
        }
        filled = substitute(text, fill, i) if fill else text
        # filling in a dropped restatement can make a restatement too
        if restates(text, question) or restates(filled, question):
            dropped.append(text)
            gone.add(key)
            continue
        out.append(filled)
        seen[key] = new_place[i] = len(out)
    return out, dropped


def _ask(template: str, entity: str) -> str:
    return template.replace("{entity}", entity.strip().strip(",;:").strip())


def rule_split(
    question: str, *, template: str = "Who or what is {entity}?", chained: bool = False, limit: int = 4
) -> list[str]:
    """Sub-questions found by surface rules when the model gave none (the decomposer's
    last fallback). Two entities compared ("Were A and B ...", "..., A or B?") give one
    ``template`` question each; a described hidden entity (a relative clause "the woman
    who ...", or "the director of X") gives a ``template`` question about it, then, with
    ``chained``, the question with the description replaced by ``#1``. Sub-questions that
    restate the question are left out; ``[]`` when no rule applies."""
    q = " ".join(question.split())
    found: list[str] = []
    pair = _PAIR_RE.search(q) or _EITHER_RE.search(q)
    if pair:
        found = [_ask(template, pair.group("a")), _ask(template, pair.group("b"))]
    else:
        m = _RELATIVE_RE.search(q) or _OF_RE.search(q)
        if m:
            desc = m.group("desc").strip()
            if m.start("desc") == 0:  # "The director of X is ...": not a name
                desc = desc[0].lower() + desc[1:]
            found = [_ask(template, desc)]
            rest = (q[: m.start("desc")] + "#1" + q[m.end("desc") :]).strip()
            if chained and len(norm_query(rest).split()) >= 3:
                found.append(rest if rest.endswith("?") else rest + "?")
    return [s for s in unique(found) if not restates(s, q)][:limit]
