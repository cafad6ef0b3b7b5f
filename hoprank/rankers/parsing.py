"""Robust parsing of a model's permutation output (``[3] > [1] > [2]`` and friends).

Never raises on model garbage and never invents a ranking: the result says what was
found, what was dropped and why, and ``ok`` is False when no identifier was found at
all (the ranker then keeps the prior order and marks the trace step as a fallback).

What is accepted:

* reasoning is stripped first: ``<think>...</think>`` blocks, everything before the last
  ``</think>``, and an unclosed ``<think>`` up to the end of the text;
* Unicode is normalised (NFKC, so fullwidth ``［３］`` becomes ``[3]``), and every
  decimal digit of any script (Arabic-Indic ``٣``, Devanagari ``३``...) becomes ASCII;
* a *run* is a sequence of identifiers joined by ``>`` or ``,``; each identifier may be
  bracketed (``[3]``) or bare (``3``). A run is used when it has a bracketed identifier,
  or at least two identifiers, or is the whole answer; so ``[3] > 1 > [2]``,
  ``3 > 1 > 2``, ``[C] > [A]``, ``[1], [3]`` parse, and the stray number in
  ``there are 20 passages`` does not;
* numeric labels ignore leading zeros; bracketed letters are read case-insensitively;
* duplicates are dropped (the first occurrence wins), identifiers outside the label
  set are reported as out of range, and labels never mentioned are appended in their
  prior order (``missing``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["ParseResult", "normalize_text", "parse_permutation", "strip_reasoning"]

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>.*\Z", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)


@dataclass
class ParseResult:
    """What :func:`parse_permutation` found.

    ``order`` is always a full permutation of ``range(len(labels))`` (found labels first,
    in the model's order, then the missing ones in prior order). ``found`` are the labels
    the model named (deduplicated, in its order); ``duplicates`` and ``out_of_range`` are
    the identifiers that were dropped; ``missing`` the labels appended at the end.
    ``ok`` is False when nothing usable was found: ``order`` is then the prior order.
    """

    order: list[int]
    found: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    out_of_range: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ok: bool = True
    error: str | None = None

    @property
    def complete(self) -> bool:
        """The model named every label exactly once and nothing else."""
        return self.ok and not self.missing and not self.duplicates and not self.out_of_range

    def summary(self) -> dict[str, object]:
        """A JSON-friendly dict for traces."""
        return {
            "found": self.found,
            "duplicates": self.duplicates,
            "out_of_range": self.out_of_range,
            "missing": self.missing,
            "ok": self.ok,
        }


def strip_reasoning(text: str) -> str:
    """Remove ``<think>`` reasoning so that only the final answer is parsed."""
    parts = _THINK_CLOSE.split(text)
    if len(parts) > 1:  # a closing tag: the answer is what follows the last one
        text = parts[-1]
    text = _THINK_BLOCK.sub(" ", text)
    return _THINK_OPEN.sub(" ", text)


def normalize_text(text: str) -> str:
    """NFKC-normalise and map every Unicode decimal digit to its ASCII digit."""
    text = unicodedata.normalize("NFKC", text)
    out: list[str] = []
    for ch in text:
        if not ch.isascii() and ch.isdecimal():
            out.append(str(unicodedata.decimal(ch)))
        else:
            out.append(ch)
    return "".join(out)


def _token_pattern(labels: Sequence[str]) -> tuple[str, str]:
    """Regexes for a bare and a bracketed identifier of this label set."""
    if labels and all(lab.isdigit() for lab in labels):
        return r"\d+", r"\d+"
    if labels and all(len(lab) == 1 and lab.isalpha() and lab.isupper() for lab in labels):
        return r"[A-Z]", r"[A-Za-z]"
    alts = "|".join(re.escape(lab) for lab in sorted(labels, key=len, reverse=True))
    return f"(?:{alts})", f"(?:{alts})"


def _canonical(token: str, numeric: bool) -> str:
    token = token.strip()
    if numeric:
        return str(int(token))
    return token.upper() if len(token) == 1 else token


def _extract(text: str, labels: Sequence[str]) -> list[str]:
    bare, bracketed = _token_pattern(labels)
    numeric = bool(labels) and all(lab.isdigit() for lab in labels)
    item = r"(?:\[\s*(?P<b>{b})\s*\]|(?<![\w\[])(?P<u>{u})(?![\w\]]))"
    plain = item.replace("?P<b>", "").replace("?P<u>", "").format(b=bracketed, u=bare)
    sep = r"\s*(?:>|,)\s*"
    item_re = re.compile(item.format(b=bracketed, u=bare))
    run_re = re.compile(rf"{plain}(?:{sep}{plain})*")
    stripped = text.strip().strip(".")
    ids: list[str] = []
    for run in run_re.finditer(text):
        members = list(item_re.finditer(run.group(0)))
        has_bracket = any(m.group("b") is not None for m in members)
        whole = run.group(0).strip() == stripped
        if has_bracket or len(members) >= 2 or whole:
            for m in members:
                tok = m.group("b") if m.group("b") is not None else m.group("u")
                ids.append(_canonical(tok, numeric))
    return ids


def parse_permutation(text: str | None, labels: Sequence[str]) -> ParseResult:
    """Parse ``text`` into an order over ``labels`` (the window's identifiers, in prior order).

    Labels are strings such as ``["1", "2", ...]`` or ``["A", "B", ...]``.
    """
    labels = list(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    prior = list(range(len(labels)))
    if not text or not text.strip():
        return ParseResult(order=prior, missing=labels, ok=False, error="empty output")
    answer = normalize_text(strip_reasoning(text))
    ids = _extract(answer, labels)
    found: list[str] = []
    duplicates: list[str] = []
    out_of_range: list[str] = []
    seen: set[str] = set()
    for tok in ids:
        if tok not in index:
            out_of_range.append(tok)
        elif tok in seen:
            duplicates.append(tok)
        else:
            seen.add(tok)
            found.append(tok)
    missing = [lab for lab in labels if lab not in seen]
    if not found:
        why = "no identifiers found" if not out_of_range else f"only out-of-range identifiers {out_of_range}"
        return ParseResult(
            order=prior,
            duplicates=duplicates,
            out_of_range=out_of_range,
            missing=labels,
            ok=False,
            error=why,
        )
    order = [index[lab] for lab in found] + [index[lab] for lab in missing]
    return ParseResult(
        order=order, found=found, duplicates=duplicates, out_of_range=out_of_range, missing=missing
    )
