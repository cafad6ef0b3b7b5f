"""Lenient JSON extraction for small-model outputs.

Small models wrap JSON in code fences, add prose around it, leave trailing commas or
answer with a numbered list instead. :func:`extract_json` tries the strict parse first
and then a fixed sequence of repairs; :func:`parse_model` validates the result with a
pydantic model. Every failure raises :class:`hoprank.errors.ParseError` with the raw text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from hoprank.errors import ParseError

__all__ = ["extract_json", "numbered_list", "parse_model", "with_alias"]

M = TypeVar("M", bound=BaseModel)

_FENCE_RE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)(?:```|$)", re.DOTALL)
_TRAILING_COMMA_RE = re.compile(r",\s*([}\]])")
_LIST_ITEM_RE = re.compile(r"^\s*(?:\d+[.):]|[-*•])\s+(.+?)\s*$")


def with_alias(data: dict[str, Any], key: str, aliases: Iterable[str]) -> dict[str, Any]:
    """A copy of ``data`` (a model's raw reply) in which a missing ``key`` takes the value of
    the first of ``aliases`` that ``data`` has (that alias removed): small models rename
    fields (``"questions"`` for ``"sub_questions"``)."""
    out = dict(data)
    if key not in out:
        alias = next((a for a in aliases if a in out), None)
        if alias is not None:
            out[key] = out.pop(alias)
    return out


def _strip_fences(text: str) -> str:
    m = _FENCE_RE.search(text)
    return m.group(1).strip() if m else text.strip()


def _balanced_span(text: str, start: int) -> str | None:
    """The balanced ``{...}`` / ``[...]`` starting at ``start`` (string-aware), or the
    unterminated rest with its missing closers appended."""
    stack: list[str] = []
    in_str = False
    esc = False
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
            continue
        if c == '"':
            in_str = True
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]":
            if not stack or stack[-1] != c:
                return None
            stack.pop()
            if not stack:
                return text[start : i + 1]
    if not stack:
        return None
    # Unterminated (a model that hit max_tokens): close what is open.
    rest = text[start:]
    if in_str:
        rest += '"'
    return rest + "".join(reversed(stack))


_MAX_SPANS = 8  # bracketed spans tried per text: prose may hold "[d3]" before the JSON


def _candidates(text: str) -> list[str]:
    out: list[str] = []
    for base in (text.strip(), _strip_fences(text)):
        if base and base not in out:
            out.append(base)
        i, spans = 0, 0
        while i < len(base) and spans < _MAX_SPANS:
            if base[i] not in "{[":
                i += 1
                continue
            span = _balanced_span(base, i)
            if span is None:
                i += 1
                continue
            spans += 1
            if span not in out:
                out.append(span)
            # Past a closed span (its inner brackets are part of it); an unterminated
            # one ran to the end of the text.
            i += len(span) if base.startswith(span, i) else len(base)
    return out


def _loads(s: str) -> Any:
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        pass
    fixed = _TRAILING_COMMA_RE.sub(r"\1", s)
    try:
        return json.loads(fixed)
    except json.JSONDecodeError:
        pass
    # Python-style literals: single quotes, True/False/None.
    if "'" in fixed and '"' not in fixed:
        py = fixed.replace("'", '"')
        py = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", py)))
        return json.loads(py)
    return json.loads(fixed)


def _values(text: str) -> tuple[list[Any], Exception | None]:
    """Every candidate of ``text`` that parses, in order, and the last parse error."""
    values: list[Any] = []
    last: Exception | None = None
    for cand in _candidates(text):
        try:
            values.append(_loads(cand))
        except json.JSONDecodeError as e:
            last = e
    return values, last


def _no_json(text: str, last: Exception | None) -> ParseError:
    return ParseError(f"no JSON value found in model output ({last or 'empty output'})", raw=text)


def extract_json(text: str) -> Any:
    """The first JSON value in ``text`` after repairs (code fences, surrounding prose,
    trailing commas, Python quoting, an unterminated object). Raises ``ParseError``."""
    values, last = _values(text)
    if not values:
        raise _no_json(text, last)
    return values[0]


def numbered_list(text: str) -> list[str]:
    """Items of a plain numbered or bulleted list (``1. ...``, ``2) ...``, ``- ...``)."""
    items = []
    for line in _strip_fences(text).splitlines():
        m = _LIST_ITEM_RE.match(line)
        if m:
            items.append(m.group(1).strip().strip('"').strip())
    return [i for i in items if i]


def parse_model(text: str, model: type[M], *, list_field: str | None = None) -> M:
    """Parse ``text`` into ``model``.

    With ``list_field``, a bare JSON array or a plain numbered list is accepted as the
    value of that field. Raises ``ParseError`` (with the raw text) when nothing fits.
    """
    values, last = _values(text)
    if not values:
        items = numbered_list(text) if list_field else []
        if not items:
            raise _no_json(text, last)
        values = [{list_field: items}]
    # The first value that fits the schema wins ("see [3]: {...}" parses [3] first);
    # when none fits, the first value's mismatch is the error.
    first_error: ValidationError | None = None
    for data in values:
        if list_field and isinstance(data, list):
            data = {list_field: data}
        try:
            return model.model_validate(data)
        except ValidationError as e:
            first_error = first_error or e
    assert first_error is not None
    err = first_error.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "<root>"
    raise ParseError(
        f"output does not match the expected schema: {where}: {err['msg']}", raw=text
    ) from first_error
