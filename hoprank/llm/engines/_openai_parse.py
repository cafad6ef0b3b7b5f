"""Strict parsing of OpenAI-shaped chat-completion responses.

Servers differ (llama.cpp adds ``id``/``bytes`` to logprob entries, vLLM may decode
tokens differently) and some misbehave (cut bodies, empty ``choices``, ``logprobs``
silently dropped). Everything here raises a typed :class:`~hoprank.errors.EngineError`
carrying a snippet of the raw response rather than returning an empty answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from hoprank.errors import EngineError

__all__ = ["candidate_forms", "message_content", "parse_completion", "parse_top_logprobs", "score_candidates"]

_SNIPPET = 400
# byte-level BPE / sentencepiece markers some servers leave in decoded tokens
_SPACE_MARKERS = ("Ġ", "▁")


def _snippet(obj: object) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, default=str)
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "…"


def parse_completion(text: str, *, what: str) -> dict[str, Any]:
    """The JSON body of a chat completion, with at least one choice object.

    A body that starts like JSON but does not parse (cut off in transit) is retryable;
    anything else malformed is not.
    """
    try:
        data = json.loads(text)
    except ValueError as e:
        looks_cut = text.lstrip().startswith(("{", "["))
        raise EngineError(
            f"{what}: {'truncated' if looks_cut else 'non-JSON'} response body ({e}): {_snippet(text)}",
            retryable=looks_cut,
        ) from None
    if not isinstance(data, dict):
        raise EngineError(f"{what}: response is not a JSON object: {_snippet(text)}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise EngineError(f"{what}: response has no choices: {_snippet(data)}")
    return data


def _token(entry: object, what: str, data: object) -> tuple[str, float]:
    if not isinstance(entry, dict):
        raise EngineError(f"{what}: malformed logprob entry {_snippet(entry)}: {_snippet(data)}")
    token, value = entry.get("token"), entry.get("logprob")
    if not isinstance(token, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EngineError(f"{what}: malformed logprob entry {_snippet(entry)}: {_snippet(data)}")
    value = float(value)
    if math.isnan(value) or value > 1e-6:
        raise EngineError(f"{what}: invalid log-probability {value} for {token!r}: {_snippet(data)}")
    for marker in _SPACE_MARKERS:
        if token.startswith(marker):
            token = " " + token[len(marker) :]
    return token, min(value, 0.0)


def parse_top_logprobs(data: dict[str, Any], *, what: str) -> dict[str, float]:
    """Token → log-probability for the first generated position: the sampled token and its
    ``top_logprobs`` alternatives (max over duplicates after space-marker normalisation).

    Raises a non-retryable :class:`EngineError` when ``logprobs`` is missing, empty or
    malformed: the caller asked for log-probabilities and did not get them.
    """
    choice = data["choices"][0]
    block = choice.get("logprobs")
    if block is None:
        raise EngineError(
            f"{what}: the response carries no logprobs (does the server support logprobs / "
            f"top_logprobs?): {_snippet(choice)}"
        )
    content = block.get("content") if isinstance(block, dict) else None
    if not isinstance(content, list) or not content:
        raise EngineError(f"{what}: malformed logprobs (no content list): {_snippet(block)}")
    first = content[0]
    top: dict[str, float] = {}
    tok, val = _token(first, what, block)
    top[tok] = val
    alternatives = first.get("top_logprobs") if isinstance(first, dict) else None
    if not isinstance(alternatives, list) or not alternatives:
        raise EngineError(f"{what}: malformed logprobs (no top_logprobs list): {_snippet(block)}")
    for entry in alternatives:
        tok, val = _token(entry, what, block)
        top[tok] = max(val, top.get(tok, -math.inf))
    return top


def candidate_forms(candidate: str) -> tuple[str, str, str]:
    """How a label ``X`` can appear as a next token: ``X``, `` X`` and ``[X``."""
    return candidate, f" {candidate}", f"[{candidate}"


def score_candidates(top: dict[str, float], candidates: Sequence[str]) -> tuple[dict[str, float], list[str]]:
    """Each candidate's best log-probability over its forms; absent ones go to ``missing``."""
    scores: dict[str, float] = {}
    missing: list[str] = []
    for c in candidates:
        values = [top[f] for f in candidate_forms(c) if f in top]
        if values:
            scores[c] = max(values)
        else:
            missing.append(c)
    return scores, missing


def message_content(choice: Any) -> str:
    """The text of a choice's ``message`` (``""`` when there is none or it is not text)."""
    message = choice.get("message") if isinstance(choice, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""
