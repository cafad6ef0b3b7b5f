"""Shared plumbing of the agent layer: one traced LLM call, bounded gathering, passage
formatting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, cast

from hoprank._sync import gather_bounded
from hoprank.errors import InvalidInput
from hoprank.llm.base import LLM, Capability, Completion, Message
from hoprank.prompts.registry import PromptLike, PromptTemplate, load_prompt
from hoprank.types import Document, Step

__all__ = [
    "format_passages",
    "gather_bounded",
    "llm_step",
    "norm_query",
    "resolve_prompt",
    "unique",
]

T = TypeVar("T")


def resolve_prompt(prompt: PromptLike | None, default: str) -> PromptTemplate:
    """Load ``prompt`` (name, path, mapping or template) or the built-in ``default``."""
    return load_prompt(default if prompt is None else prompt)


async def llm_step(
    engine: LLM,
    template: PromptTemplate,
    variables: dict[str, Any],
    *,
    name: str,
    max_tokens: int,
    temperature: float = 0.0,
    trace_input: dict[str, Any] | None = None,
    extra_messages: Sequence[Message] = (),
    trace: list[Step] | None = None,
) -> tuple[str, Step, Completion]:
    """Render ``template``, call ``engine.generate`` and return ``(text, step, completion)``.

    ``name`` names the step, ``<kind>`` or ``<kind>.<detail>`` (``answer.short``,
    ``decompose.reask``): the step's kind is the part before the dot.

    ``text`` is the model output with the template's ``params.prefill`` prepended when
    the engine can continue a prefilled assistant turn. The step records the inputs
    (``trace_input`` or the variables), the prompt ref, the raw output, tokens and
    seconds; callers fill ``output``/``fallback``/``error``. With ``trace`` the step is
    appended to it before the call, so a call that fails or is cancelled (a time budget)
    still leaves its step, with ``error`` saying so.
    """
    messages = cast(list[Message], template.render(**variables))
    messages.extend(extra_messages)
    prefill = str(template.params.get("prefill", ""))
    if prefill and Capability.PREFILL not in engine.capabilities:
        prefill = ""
    step = Step(
        kind=name.split(".", 1)[0],
        name=name,
        input=dict(variables if trace_input is None else trace_input),
        prompt=template.ref,
    )
    t0 = time.perf_counter()
    step.started_at = time.time()
    if trace is not None:
        trace.append(step)
    try:
        comp = await engine.generate(
            messages, max_tokens=max_tokens, temperature=temperature, prefill=prefill
        )
    except asyncio.CancelledError:
        step.error = "cancelled before the model replied"
        raise
    except Exception as e:
        step.error = f"{type(e).__name__}: {e}"
        raise
    finally:
        step.seconds = time.perf_counter() - t0
    text = prefill + comp.text
    step.raw = text
    step.usage = comp.usage.model_copy(update={"seconds": step.seconds})
    return text, step, comp


def check_documents(docs: Sequence[object], retriever: object) -> None:
    """Raise ``InvalidInput`` unless every search result is a :class:`Document`."""
    wrong = [d for d in docs if not isinstance(d, Document)]
    if wrong:
        raise InvalidInput(
            f"{type(retriever).__name__}.search must return Document objects; "
            f"got {len(wrong)} of type {type(wrong[0]).__name__}"
        )


def norm_query(q: str) -> str:
    """Normalised form used to detect repeated queries (case, spaces, punctuation)."""
    return " ".join("".join(c.lower() if c.isalnum() else " " for c in q).split())


def unique(items: Iterable[str]) -> list[str]:
    """Items in order, without repeats under :func:`norm_query` and without empties."""
    seen: set[str] = set()
    out: list[str] = []
    for it in items:
        key = norm_query(it)
        if key and key not in seen:
            seen.add(key)
            out.append(it.strip())
    return out


def format_passages(docs: Sequence[Document], *, max_words: int | None = 100) -> str:
    """``[id] title: text`` per line, each passage cut to ``max_words`` words."""
    lines = []
    for d in docs:
        words = d.full_text.split()
        text = " ".join(words[:max_words]) + (" ..." if max_words and len(words) > max_words else "")
        lines.append(f"[{d.id}] {text}")
    return "\n".join(lines)
