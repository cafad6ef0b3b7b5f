"""Preparing passages for listwise prompts: labels, identifier neutralisation, and
truncation to a token budget measured with the engine's own tokenizer."""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from typing import Literal

from hoprank.errors import ConfigError, ContextOverflow
from hoprank.llm.base import LLM, Message, chat_renderer, exact_tokenizer
from hoprank.types import Document

__all__ = [
    "TEMPLATE_RESERVE",
    "LabelStyle",
    "fit_passage_budget",
    "make_labels",
    "neutralize_identifiers",
    "passage_text",
    "prompt_tokens",
    "scrub_surrogates",
    "to_messages",
    "truncate_passages",
]

LabelStyle = Literal["numeric", "letters"]

#: Tokens held back, for an engine that cannot render its chat template, for the default
#: system prompt a server's template may insert when a request has none.
TEMPLATE_RESERVE = 32

# [3], [12], [B], [ b ]  — anywhere
_BRACKETED = re.compile(r"\[\s*(\d{1,3}|[A-Za-z])\s*\]")
# (B) — a single capital letter in parentheses, anywhere
_PAREN_LETTER = re.compile(r"\(\s*([A-Z])\s*\)")
# "B) " or "3) " at the start of a line
_LINE_ITEM = re.compile(r"(?m)^(\s*)([A-Z]|\d{1,3})\)\s")
# a bare ranking run that the permutation parser would read: "3 > 1", "A > B", "A, B"
_ID = r"(?:\d+|[A-Z])"
_BARE_GT = re.compile(rf"(?<![\w\[])({_ID})\s*>\s*(?={_ID}(?![\w\]]))")
_BARE_COMMA = re.compile(r"(?<![\w\[])([A-Z])\s*,\s*(?=[A-Z](?![\w\]]))")
# fullwidth brackets, digits and letters, which the parser reads after NFKC normalisation
_FULLWIDTH = re.compile(r"[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\uff3b\uff3d]")


def make_labels(n: int, style: LabelStyle = "numeric") -> list[str]:
    """``["1".."n"]`` or ``["A".."Z"][:n]``. Letter labels exist for ``n <= 26`` only."""
    if style == "numeric":
        return [str(i + 1) for i in range(n)]
    if style == "letters":
        if n > 26:
            raise ConfigError(
                f"letter labels support windows of at most 26 passages, got {n}; "
                "use a smaller window or numeric labels"
            )
        return list(string.ascii_uppercase[:n])
    raise ConfigError(f"unknown label style {style!r}; use 'numeric' or 'letters'")


def neutralize_identifiers(text: str) -> str:
    """Rewrite identifier-like patterns so a passage cannot impersonate a label.

    ``[3]`` becomes ``(3)``, ``[B]`` and ``(B)`` become ``B``, a line that starts with
    ``B)`` or ``3)`` loses the parenthesis. So ``see [2] > [5]`` in a passage reads
    ``see (2) > (5)``: no bracketed identifier a model could copy as a label. Fullwidth
    forms (``［２］``, ``Ｂ``) are folded to ASCII first, as the permutation parser folds
    them, and a bare run the parser would read as a ranking (``3 > 1``, ``A > B``,
    ``A, B``) gets ``›`` / ``;`` as its separator: nothing left in a passage parses as
    identifiers (:func:`hoprank.rankers.parsing.parse_permutation`), except bare numeric
    comma lists such as ``1, 2, 3``, which are left alone because they are ordinary text.
    """
    text = _FULLWIDTH.sub(lambda m: unicodedata.normalize("NFKC", m.group(0)), text)
    text = _BRACKETED.sub(lambda m: f"({m.group(1)})" if m.group(1).isdigit() else m.group(1), text)
    text = _PAREN_LETTER.sub(r"\1", text)
    text = _LINE_ITEM.sub(r"\1\2 ", text)
    text = _BARE_GT.sub(r"\1 › ", text)
    return _BARE_COMMA.sub(r"\1; ", text)


def scrub_surrogates(text: str) -> str:
    """``text`` with lone UTF-16 surrogates (``"\\ud800"``, from broken decoding) replaced by
    U+FFFD and surrogate pairs joined: such strings cannot be encoded as UTF-8, so no
    HTTP client or tokenizer accepts them. Other text is returned unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def passage_text(doc: Document, *, neutralize: bool = True) -> str:
    """The text a ranker shows for ``doc``: title and text, whitespace collapsed."""
    text = scrub_surrogates(" ".join(doc.full_text.split()))
    return neutralize_identifiers(text) if neutralize else text


def to_messages(rendered: Sequence[dict[str, str]]) -> list[Message]:
    """Rendered template messages as typed chat messages (lone surrogates scrubbed)."""
    out: list[Message] = []
    for m in rendered:
        role = m["role"]
        if role not in ("system", "user", "assistant"):  # pragma: no cover - templates validate roles
            raise ConfigError(f"unsupported role {role!r} in a ranker prompt")
        out.append({"role": role, "content": scrub_surrogates(m["content"])})  # type: ignore[typeddict-item]
    return out


def prompt_tokens(engine: LLM, messages: Sequence[Message], prefill: str = "") -> int:
    """Tokens of ``messages`` as the engine will see them.

    An engine with ``Capability.RENDER`` (a local engine, or an OpenAIEngine given the
    served model's HF tokenizer) renders its chat template and the text is counted;
    otherwise the message contents are counted plus a per-message allowance for role
    markers and a reserve for what a server's chat template adds unseen (Qwen2.5's
    template, as llama.cpp and vLLM servers apply it, inserts a default system prompt of
    ~20 tokens when the request has none).
    """
    renderer = chat_renderer(engine)
    if renderer is not None:
        return engine.tokenizer.count(renderer.render(messages, prefill))
    per_message = 6  # a prefill is sent as one more (assistant) message
    reserve = 0 if any(m["role"] == "system" for m in messages) else TEMPLATE_RESERVE
    return (
        reserve
        + sum(engine.tokenizer.count(m["content"]) + per_message for m in messages)
        + (engine.tokenizer.count(prefill) + per_message if prefill else 0)
    )


def fit_passage_budget(
    engine: LLM,
    *,
    overhead_tokens: int,
    n_passages: int,
    max_new_tokens: int,
    max_passage_tokens: int,
    min_passage_tokens: int = 8,
) -> int:
    """Per-passage token budget so that the whole prompt fits the context window.

    ``overhead_tokens`` are the tokens of the prompt rendered with empty passages. The
    budget is ``min(max_passage_tokens, (context_window - max_new_tokens - overhead) //
    n_passages)``; when the room per passage is below ``min_passage_tokens`` (and the
    cap), :class:`ContextOverflow` is raised: the window cannot be ranked meaningfully.
    """
    room = engine.context_window - max_new_tokens - overhead_tokens
    budget = room // max(1, n_passages)
    if budget < min(min_passage_tokens, max_passage_tokens):
        raise ContextOverflow(
            f"{n_passages} passages do not fit: context window {engine.context_window}, "
            f"prompt overhead {overhead_tokens}, reserved output {max_new_tokens}, "
            f"leaving {budget} tokens per passage (< {min_passage_tokens}); use a smaller window",
            prompt_tokens=overhead_tokens + max_new_tokens,
            context_window=engine.context_window,
        )
    return min(budget, max_passage_tokens)


def truncate_passages(engine: LLM, texts: Sequence[str], budget: int) -> list[str]:
    """Cut every text to at most ``budget`` tokens of the engine's tokenizer (in one
    batch call with an ``ExactTokenizer``, ``Capability.EXACT_TOKENIZER``)."""
    exact = exact_tokenizer(engine)
    if exact is not None:
        return exact.truncate_many(texts, budget)
    return [engine.tokenizer.truncate(t, budget) for t in texts]
