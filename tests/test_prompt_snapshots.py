"""Snapshots of every built-in prompt, rendered with fixed example variables.

A change to any built-in template (wording, whitespace, params, output pattern,
description) changes its snapshot, so it shows up as a visible diff in review. To accept
a change, rewrite the snapshots and commit them with the template:

    HOPRANK_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_prompt_snapshots.py

A built-in prompt without example variables here, or without a snapshot file, fails;
so does a snapshot file whose prompt no longer exists. Rendered prompts as the rankers
build them (labels, passage cutting) are snapshot-tested in ``tests/test_rankgpt.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from hoprank.prompts import list_prompts, load_prompt

SNAPSHOTS = Path(__file__).parent / "snapshots" / "prompts"
UPDATE = os.environ.get("HOPRANK_UPDATE_SNAPSHOTS") == "1"

_LISTWISE: dict[str, Any] = {
    "query": "how long do you boil an egg",
    "passages": [
        {"label": "1", "text": "Boiling eggs: a soft-boiled egg takes about 6 minutes."},
        {"label": "2", "text": "The Eiffel Tower is in Paris."},
        {"label": "3", "text": "Hard-boiled eggs need 10 to 12 minutes in boiling water."},
    ],
    "num": 3,
    "example": "[2] > [1]",
    "label_desc": "a numerical",
}
_PASSAGES = (
    "[d1] Inception: Inception is a 2010 film directed by Christopher Nolan.\n"
    "[d2] Christopher Nolan: Christopher Nolan (born 30 July 1970) is a British-American filmmaker."
)

#: Fixed example variables per prompt name (every version of the name uses them).
EXAMPLES: dict[str, dict[str, Any]] = {
    "rankgpt": _LISTWISE,
    "rankgpt-short": _LISTWISE,
    "first": {
        **_LISTWISE,
        "passages": [
            {"label": c, "text": p["text"]} for c, p in zip("ABC", _LISTWISE["passages"], strict=True)
        ],
        "example": "[B] > [A]",
        "label_desc": "an alphabetical",
    },
    "setwise": {
        "query": "how long do you boil an egg",
        "passages": [
            {"label": c, "text": p["text"]} for c, p in zip("ABC", _LISTWISE["passages"], strict=True)
        ],
        "num": 3,
    },
    "icr": {
        "passages": [p["text"] for p in _LISTWISE["passages"]],
        "query": "how long do you boil an egg",
        "split": "<<SPLIT>>",
    },
    "pointwise": {
        "query": "how long do you boil an egg",
        "passage": "Hard-boiled eggs need 10 to 12 minutes in boiling water.",
    },
    "decompose": {
        "question": "In which year was the director of Inception born?",
        "max_sub_questions": 3,
    },
    "decompose-chain": {
        "question": "In which year was the director of Inception born?",
        "max_sub_questions": 3,
    },
    "rewrite-keywords": {"query": "In which year was the director of Inception born?"},
    "rewrite-hyde": {"query": "In which year was the director of Inception born?"},
    "rewrite-multi-query": {"query": "director of Inception birth year", "n": 3},
    "answer": {"question": "In which year was the director of Inception born?", "passages": _PASSAGES},
    "answer-short": {"question": "In which year was the director of Inception born?", "passages": _PASSAGES},
    "agent-step": {
        "question": "In which year was the director of Inception born?",
        "passages": _PASSAGES,
        "notes": "Inception was directed by Christopher Nolan [d1].",
        "searches": "In which year was the director of Inception born?",
        "observation": 'The search "In which year was the director of Inception born?" returned 2 passages (2 new).',
        "steps_left": 5,
    },
}


def render_snapshot(ref: str) -> str:
    """The snapshot text of built-in prompt ``ref`` (name@version)."""
    tpl = load_prompt(ref)
    if tpl.name not in EXAMPLES:
        pytest.fail(f"built-in prompt {ref} has no example variables: add them to EXAMPLES in {__file__}")
    messages = tpl.render(**EXAMPLES[tpl.name])
    params = json.dumps(tpl.params, sort_keys=True, ensure_ascii=False, indent=2).replace("\n", "\n# ")
    head = [
        f"# ref: {tpl.ref}",
        f"# description: {' '.join(tpl.description.split())}",
        f"# variables: {', '.join(tpl.variables)}",
        f"# output_pattern: {tpl.output_pattern}",
        f"# params: {params}",
    ]
    body = [f"<{m['role']}>\n{m['content']}" for m in messages]
    return "\n".join(head + body) + "\n"


@pytest.mark.parametrize("ref", list_prompts())
def test_builtin_prompt_snapshot(ref: str) -> None:
    text = render_snapshot(ref)
    path = SNAPSHOTS / f"{ref}.txt"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no snapshot for built-in prompt {ref}; run with HOPRANK_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"built-in prompt {ref} renders differently from {path}; if intended, rerun with "
        "HOPRANK_UPDATE_SNAPSHOTS=1 (and give a released prompt a new version instead of editing it)"
    )


def test_no_stale_snapshots() -> None:
    builtins = set(list_prompts())
    stale = sorted(p.stem for p in SNAPSHOTS.glob("*.txt") if p.stem not in builtins)
    if UPDATE:
        for name in stale:
            (SNAPSHOTS / f"{name}.txt").unlink()
        stale = []
    assert not stale, f"snapshots of prompts that no longer exist: {stale}"


def test_every_example_is_used_and_complete() -> None:
    names = {ref.split("@")[0] for ref in list_prompts()}
    assert set(EXAMPLES) == names
    for ref in list_prompts():
        tpl = load_prompt(ref)
        assert set(EXAMPLES[tpl.name]) == set(tpl.variables), ref


def test_snapshot_catches_a_one_character_change(tmp_path: Path) -> None:
    """The comparison is exact: a template that differs by one space renders differently."""
    tpl = load_prompt("rankgpt@1")
    data = tpl.model_dump(mode="json")
    data["messages"][-1]["content"] = data["messages"][-1]["content"].replace("passages", "passages ", 1)
    changed = load_prompt(data)
    assert changed.render(**_LISTWISE) != tpl.render(**_LISTWISE)
    assert changed.ref != tpl.ref
