"""RankGPT on the scripted engine (control flow, parsing fallbacks, prompt budget)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from rank_data import LINE, dl19_query, rel
from rank_data import make_docs as _make_docs

from hoprank.errors import CapabilityMissing, ContextOverflow, EngineError, PromptError
from hoprank.llm.base import Capability, Message
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.prompts import load_prompt
from hoprank.rankers import RankGPT, make_ranker
from hoprank.types import Document


def make_docs(n: int, seed: int = 0) -> list[Document]:
    return _make_docs(n, seed, filler="about things ")


def oracle(messages: Sequence[Message]) -> str:
    """A perfect listwise model: ranks the window's labels by the hidden rel number."""
    found = LINE.findall(messages[-1]["content"])
    ranked = sorted(found, key=lambda t: -int(t[1]))
    return " > ".join(f"[{lab}]" for lab, _ in ranked)


async def test_oracle_sliding_windows_bring_the_best_to_the_top() -> None:
    docs = make_docs(25)
    eng = ScriptedEngine(oracle)
    r = RankGPT(eng, window=10, step=5)
    ranking = await r.arank("q", docs)
    assert sorted(ranking.ids) == sorted(d.id for d in docs)
    # windows (15,25) (10,20) (5,15) (0,10): the best window - step = 5 reach the head in order
    assert [rel(d) for d in ranking.documents[:5]] == [24, 23, 22, 21, 20]
    assert len(eng.calls) == 4
    assert [(s.input["start"], s.input["end"]) for s in ranking.trace] == [
        (15, 25),
        (10, 20),
        (5, 15),
        (0, 10),
    ]
    for s in ranking.trace:
        assert s.kind == "window"
        assert s.prompt == load_prompt("rankgpt").ref
        assert s.raw and not s.fallback
        assert s.input["prompt_tokens"] > 0
        assert s.input["max_new_tokens"] == 5 * 10 + 8
        assert s.output["parsed"]["ok"]
    assert ranking.usage.llm_calls == 4
    assert ranking.documents[0].score is not None


async def test_garbage_falls_back_to_prior_order_and_is_recorded() -> None:
    docs = make_docs(6)
    eng = ScriptedEngine(["I am sorry, I cannot help with that."])
    ranking = await RankGPT(eng, window=10, step=5).arank("q", docs)
    assert ranking.ids == [d.id for d in docs]
    (step,) = ranking.trace
    assert step.fallback and step.error and "prior order" in step.error
    assert ranking.fallbacks == 1


async def test_partial_output_appends_missing_in_prior_order() -> None:
    docs = make_docs(5)
    eng = ScriptedEngine(["[4] > [2] > [4] > [9]"])
    ranking = await RankGPT(eng).arank("q", docs)
    assert ranking.ids == ["d3", "d1", "d0", "d2", "d4"]
    parsed = ranking.trace[0].output["parsed"]
    assert parsed["duplicates"] == ["4"] and parsed["out_of_range"] == ["9"]
    assert parsed["missing"] == ["1", "3", "5"]
    assert not ranking.trace[0].fallback


async def test_engine_errors_are_raised_not_swallowed() -> None:
    eng = ScriptedEngine([EngineError("boom", retryable=True)])
    with pytest.raises(EngineError, match="boom"):
        await RankGPT(eng).arank("q", make_docs(4))


async def test_letters_and_single_message_layout() -> None:
    eng = ScriptedEngine(["[C] > [A]"])
    ranking = await RankGPT(eng, labels="letters", prompt="rankgpt-short").arank("q", make_docs(3))
    assert ranking.ids == ["d2", "d0", "d1"]
    msgs = eng.calls[0]["messages"]
    assert [m["role"] for m in msgs] == ["user"]
    assert "[A] passage 0" in msgs[0]["content"] and "[C] passage 2" in msgs[0]["content"]
    assert ranking.trace[0].prompt == load_prompt("rankgpt-short").ref


async def test_passages_are_cut_to_fit_the_context_window() -> None:
    long = " ".join(f"w{i}" for i in range(500))
    docs = [Document(id=f"d{i}", text=long) for i in range(10)]
    eng = ScriptedEngine(["[1]"], context_window=600)
    ranking = await RankGPT(eng, window=10, max_passage_tokens=300).arank("q", docs)
    step = ranking.trace[0]
    budget = step.input["passage_budget"]
    assert 8 <= budget < 50
    assert step.input["prompt_tokens"] + step.input["max_new_tokens"] <= 600
    content = eng.calls[0]["messages"][-1]["content"]
    assert re.search(rf"\bw{budget - 1}\b", content) and not re.search(rf"\bw{budget}\b", content)
    # the cap applies when there is room
    eng2 = ScriptedEngine(["[1]"])
    ranking = await RankGPT(eng2, max_passage_tokens=7).arank("q", docs)
    assert ranking.trace[0].input["passage_budget"] == 7


async def test_context_too_small_raises() -> None:
    eng = ScriptedEngine(["[1]"], context_window=120)
    with pytest.raises(ContextOverflow):
        await RankGPT(eng, window=10).arank("q", make_docs(10))


async def test_identifier_like_text_is_neutralised() -> None:
    docs = [Document(id="a", text="see [2] and (B) here"), Document(id="b", text="plain")]
    eng = ScriptedEngine(["[2] > [1]"])
    await RankGPT(eng).arank("q", docs)
    content = eng.calls[0]["messages"][-1]["content"]
    assert "see (2) and B here" in content and "[2] and" not in content


async def test_prompt_accepts_name_path_and_template(tmp_path: Path) -> None:
    tpl = load_prompt("rankgpt-short")
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nversion: 3\nvariables: [query, passages]\nmessages:\n"
        "  - role: user\n    content: |-\n      {{ query }}\n      {% for p in passages %}[{{ p.label }}] {{ p.text }}\n"
        "      {% endfor %}\n",
        encoding="utf-8",
    )
    for prompt, ref_prefix in [
        ("rankgpt-short@1", "rankgpt-short@1#"),
        (tpl, "rankgpt-short@1#"),
        (path, "mine@3#"),
    ]:
        eng = ScriptedEngine(["[2] > [1]"])
        ranking = await RankGPT(eng, prompt=prompt).arank("q", make_docs(2))
        assert ranking.trace[0].prompt is not None and ranking.trace[0].prompt.startswith(ref_prefix)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nversion: 1\nvariables: [query]\nmessages:\n  - role: user\n    content: '{{ query }}'\n"
    )
    with pytest.raises(PromptError, match="passages"):
        RankGPT(ScriptedEngine([]), prompt=bad)


def test_needs_generate() -> None:
    eng = ScriptedEngine([], capabilities=frozenset({Capability.TOKEN_LOGPROBS}))
    with pytest.raises(CapabilityMissing):
        RankGPT(eng)


def test_sync_facade_top_k_and_factory() -> None:
    eng = ScriptedEngine(oracle)
    r = make_ranker("rankgpt", eng, window=4, step=2)
    assert isinstance(r, RankGPT)
    ranking = r.rank("q", make_docs(9), top_k=3)
    assert [rel(d) for d in ranking.documents] == [8, 7, 6]


# ----------------------------------------------------------------------------- real model


@pytest.mark.slow
async def test_rankgpt_on_smollm2_dl19(smollm2_engine: object, datasets_dir: Path) -> None:
    """Plumbing on a real model and real data: SmolLM2 follows the format badly, so only
    the invariants are asserted (valid permutation, a trace step per window)."""
    query, docs = dl19_query(datasets_dir, k=20)
    ranker = RankGPT(smollm2_engine, window=10, step=5, max_passage_tokens=24, max_new_tokens=16)  # type: ignore[arg-type]
    ranking = await ranker.arank(query, docs)
    assert sorted(ranking.ids) == sorted(d.id for d in docs)
    assert [(s.input["start"], s.input["end"]) for s in ranking.trace] == [(10, 20), (5, 15), (0, 10)]
    for s in ranking.trace:
        assert s.raw is not None and s.prompt == ranker.prompt.ref
        assert 0 < s.input["prompt_tokens"] < smollm2_engine.context_window  # type: ignore[attr-defined]
        assert s.usage.completion_tokens > 0
        assert s.fallback == (not s.output["parsed"]["ok"])
    assert ranking.usage.llm_calls == 3


# ----------------------------------------------------------------------------- prompt snapshots

SNAPSHOTS = Path(__file__).parent / "snapshots" / "rankers"


def _render_snapshot(ranker_name: str, prompt: str) -> str:
    docs = [
        Document(id="a", text="Water boils at 100 C [1] at sea level.", title="Boiling"),
        Document(id="b", text="The Eiffel Tower is in Paris."),
        Document(id="c", text="B) a list item\nand (C) more"),
    ]
    if ranker_name == "pointwise":
        from hoprank.rankers import PointwiseLLM

        eng = ScriptedEngine(logprobs_fn=lambda m, c, p: {"Yes": -1.0, "No": -2.0})
        PointwiseLLM(eng, prompt=prompt).rank("boiling point of water", docs[:2])
    else:
        eng = ScriptedEngine(["[1]"], logprobs_fn=lambda m, c, p: {"A": -1.0})
        ranker = make_ranker(ranker_name, eng, prompt=prompt)
        ranker.rank("boiling point of water", docs)
    call = eng.calls[0]
    parts = [f"<{m['role']}>\n{m['content']}" for m in call["messages"]]
    return "\n".join(parts) + f"\n<prefill>{call['prefill']}\n"


@pytest.mark.parametrize(
    ("ranker_name", "prompt"),
    [
        ("rankgpt", "rankgpt@1"),
        ("rankgpt", "rankgpt-short@1"),
        ("first", "first@1"),
        ("pointwise", "pointwise@1"),
    ],
)
def test_rendered_prompt_snapshots(ranker_name: str, prompt: str) -> None:
    """Rendered prompts are part of the contract: a change must update the snapshot
    (``HOPRANK_UPDATE_SNAPSHOTS=1``) and, for a built-in prompt, bump its version."""
    import os

    text = _render_snapshot(ranker_name, prompt)
    path = SNAPSHOTS / f"{prompt}.txt"
    if os.environ.get("HOPRANK_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"missing snapshot {path}; run with HOPRANK_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(encoding="utf-8")
