"""Agent layer, scripted engine: JSON repair, Decomposer, Rewriter, Answerer."""

from __future__ import annotations

import pytest
from agents_fakes import DOCS, dec_out

from hoprank.agents import (
    Answerer,
    Decomposer,
    Decomposition,
    Rewriter,
    clean_short_answer,
    parse_citations,
)
from hoprank.agents._json import extract_json, numbered_list, parse_model
from hoprank.agents.decompose import SubQuestions
from hoprank.errors import EngineError, InvalidInput, ParseError
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.prompts import load_prompt

Q = "What government position was held by the woman who portrayed Corliss Archer in the film Kiss and Tell?"
PREFILL = '{"find_first": "'


# -- JSON repair ----------------------------------------------------------------------
def test_json_found_after_bracketed_prose_and_first_fitting_value_wins() -> None:
    text = 'Passages [d3] and [1, 2] say: {"sub_questions": ["a?", "b?"]} (done)'
    assert extract_json(text) == [1, 2]  # the first value that parses
    assert parse_model(text, SubQuestions).sub_questions == ["a?", "b?"]  # the first that fits
    # inner brackets of a parsed span are not tried on their own
    assert parse_model(
        '{"sub_questions": [["x"]]} {"sub_questions": ["c?"]}', SubQuestions
    ).sub_questions == ["c?"]
    with pytest.raises(ParseError, match="expected schema"):
        parse_model("see [1] and [2]", SubQuestions)


@pytest.mark.parametrize(
    "raw",
    [
        '{"sub_questions": ["a?", "b?"]}',
        'Sure! Here it is:\n```json\n{"sub_questions": ["a?", "b?"],}\n```\nHope it helps.',
        '{"sub_questions": ["a?", "b?",],}',
        "{'sub_questions': ['a?', 'b?']}",
        '["a?", "b?"]',
        "1. a?\n2. b?",
        '{"sub_questions": ["a?", "b?"',  # cut off by max_tokens
        '{"questions": [{"question": "a?"}, {"question": "b?"}]}',
    ],
)
def test_parse_model_repairs(raw: str) -> None:
    assert parse_model(raw, SubQuestions, list_field="sub_questions").sub_questions == ["a?", "b?"]


@pytest.mark.parametrize("raw", ["", "I cannot help with that.", '{"sub_questions": "a?"}', '{"x": 1}'])
def test_parse_model_rejects(raw: str) -> None:
    with pytest.raises(ParseError) as ei:
        parse_model(raw, SubQuestions, list_field="sub_questions")
    assert ei.value.raw == raw


def test_extract_json_first_value_and_lists() -> None:
    assert extract_json('noise {"a": [1, 2]} more {"b": 2}') == {"a": [1, 2]}
    assert extract_json('{"a": "x}y"}') == {"a": "x}y"}
    assert numbered_list("Steps:\n1) first\n- second\nnot an item") == ["first", "second"]


# -- Decomposer -----------------------------------------------------------------------
async def test_decomposer_clean_output_with_prefill() -> None:
    eng = ScriptedEngine(
        [dec_out("Who portrayed Corliss Archer in Kiss and Tell?", "What position did she hold?")]
    )
    dec = await Decomposer(eng).adecompose(Q)
    assert dec.sub_questions == [
        "Who portrayed Corliss Archer in Kiss and Tell?",
        "What position did she hold?",
    ]
    assert not dec.fallback and not dec.reasked
    assert eng.calls[0]["prefill"] == PREFILL
    step = dec.trace[0]
    assert step.prompt == load_prompt("decompose").ref
    assert step.raw is not None and step.raw.startswith(PREFILL)
    assert step.output["repaired"] is False
    assert step.usage.llm_calls == 1 and step.usage.total_tokens > 0
    assert dec.queries[0] == Q and len(dec.queries) == 3


async def test_decomposer_repairs_without_reask() -> None:
    # The model ignored the prefill and wrapped everything in a fence with a trailing comma.
    raw = '```json\n{"sub_questions": ["Who played Corliss Archer?", "What job did she have?",]}\n```'
    eng = ScriptedEngine([raw])
    dec = await Decomposer(eng).adecompose(Q)
    assert dec.sub_questions == ["Who played Corliss Archer?", "What job did she have?"]
    assert len(eng.calls) == 1
    assert dec.trace[0].output["repaired"] is True


async def test_decomposer_reasks_once_with_the_error() -> None:
    eng = ScriptedEngine(
        ["I think this is hard.", dec_out("Who played Corliss Archer?", "What job did she have?")]
    )
    dec = await Decomposer(eng).adecompose(Q)
    assert dec.reasked and not dec.fallback
    assert dec.sub_questions == ["Who played Corliss Archer?", "What job did she have?"]
    assert len(eng.calls) == 2
    second = eng.calls[1]["messages"]
    assert second[-2]["role"] == "assistant" and "I think this is hard" in second[-2]["content"]
    assert second[-1]["role"] == "user" and "could not be used" in second[-1]["content"]
    assert [s.name for s in dec.trace] == ["decompose", "decompose.reask"]
    assert dec.trace[0].error and not dec.trace[0].fallback
    assert dec.usage.llm_calls == 2


async def test_decomposer_falls_back_to_a_rule_split_never_the_question() -> None:
    eng = ScriptedEngine(["no idea", "still no idea"])
    dec = await Decomposer(eng).adecompose(Q)
    split = "Who or what is the woman who portrayed Corliss Archer in the film Kiss and Tell?"
    assert dec.fallback and dec.fallback_to == "rule_split" and dec.sub_questions == [split]
    assert dec.queries == [Q, split] and dec.reask_reason == "parse"
    assert dec.trace[-1].fallback and dec.trace[-1].error
    assert dec.trace[-1].output["fallback_to"] == "rule_split"
    assert len(eng.calls) == 2
    assert dec.counters == {
        "restated": 0,
        "reask_parse": 1,
        "reask_restated": 0,
        "fallback_rule_split": 1,
        "fallback_none": 0,
    }
    eng2 = ScriptedEngine(["no idea"])
    dec2 = await Decomposer(eng2, reask=False).adecompose(Q)
    assert dec2.fallback and len(eng2.calls) == 1 and not dec2.reasked
    # no rule applies: no sub-questions at all, the question alone is searched
    dec3 = await Decomposer(ScriptedEngine(["no", "no"])).adecompose("Shirley Temple protocol")
    assert (
        dec3.fallback_to == "none"
        and dec3.sub_questions == []
        and dec3.queries == ["Shirley Temple protocol"]
    )


async def test_decomposer_caps_and_dedupes_and_propagates_engine_errors() -> None:
    eng = ScriptedEngine([dec_out("a?", "A?", "b?", "c?", "d?")])
    dec = await Decomposer(eng, max_sub_questions=2).adecompose(Q)
    assert dec.sub_questions == ["a?", "b?"]
    with pytest.raises(EngineError):
        await Decomposer(ScriptedEngine([EngineError("boom", retryable=False)])).adecompose(Q)
    with pytest.raises(InvalidInput):
        await Decomposer(ScriptedEngine([])).adecompose("  ")


async def test_decomposer_without_prefill_capability_and_custom_prompt(tmp_path) -> None:
    from hoprank.llm.base import Capability

    eng = ScriptedEngine(['{"sub_questions": []}'], capabilities=frozenset({Capability.GENERATE}))
    dec = await Decomposer(eng).adecompose("When was Shirley Temple born?")
    assert eng.calls[0]["prefill"] == ""
    assert dec.sub_questions == [] and dec.queries == ["When was Shirley Temple born?"]
    p = tmp_path / "my-decompose@1.yaml"
    p.write_text(
        "name: my-decompose\nversion: 1\nvariables: [question, max_sub_questions]\n"
        "messages:\n  - role: user\n    content: 'Split: {{ question }} (max {{ max_sub_questions }})'\n"
    )
    eng2 = ScriptedEngine(['["x?", "y?"]'])
    dec2 = await Decomposer(eng2, prompt=p).adecompose("q?")
    assert dec2.sub_questions == ["x?", "y?"]
    assert dec2.trace[0].prompt is not None and dec2.trace[0].prompt.startswith("my-decompose@1#")
    assert eng2.calls[0]["messages"][0]["content"] == "Split: q? (max 4)"


async def test_decompose_many_bounded_and_ordered() -> None:
    eng = ScriptedEngine(lambda msgs: dec_out(msgs[-1]["content"][10:] + " part?"))
    out = await Decomposer(eng, concurrency=2).adecompose_many(["one?", "two?", "three?"])
    assert [d.sub_questions[0] for d in out] == ["one? part?", "two? part?", "three? part?"]


def test_decomposition_json_roundtrip_and_sync_facade() -> None:
    eng = ScriptedEngine(["nope", "nope"])
    dec = Decomposer(eng).decompose(Q)
    again = Decomposition.model_validate_json(dec.model_dump_json())
    assert again == dec and again.trace[-1].fallback


# -- Rewriter -------------------------------------------------------------------------
async def test_rewriter_strategies() -> None:
    mq = await Rewriter(ScriptedEngine(['"corliss archer actress", "Kiss and Tell cast"]}'])).arewrite(Q)
    assert mq.queries == [Q, "corliss archer actress", "Kiss and Tell cast"] and not mq.fallback
    kw = await Rewriter(
        ScriptedEngine(["Keywords: Corliss Archer Kiss and Tell actress\nextra"]), "keywords"
    ).arewrite(Q)
    assert kw.queries == [Q, "Corliss Archer Kiss and Tell actress"]
    hy = await Rewriter(
        ScriptedEngine(["Shirley Temple played Corliss Archer.\nShe was Chief of Protocol."]),
        "hyde",
        include_original=False,
    ).arewrite(Q)
    assert hy.queries == ["Shirley Temple played Corliss Archer. She was Chief of Protocol."]
    assert hy.trace[0].prompt is not None and hy.trace[0].prompt.startswith("rewrite-hyde@1#")


async def test_rewriter_fallback_and_validation() -> None:
    rw = await Rewriter(ScriptedEngine(["   "]), "keywords", include_original=False).arewrite(Q)
    assert rw.fallback and rw.queries == [Q] and rw.trace[0].fallback
    with pytest.raises(InvalidInput):
        Rewriter(ScriptedEngine([]), "nonsense")  # type: ignore[arg-type]
    out = await Rewriter(ScriptedEngine(['"a", "b"]}', '"c"]}']), n=1).arewrite_many(["x", "y"])
    assert [r.queries for r in out] == [["x", "a"], ["y", "c"]]


# -- Answerer -------------------------------------------------------------------------
def test_parse_citations_and_clean_short() -> None:
    valid, invalid = parse_citations(
        "Shirley Temple [d1][d2, d9] was Chief [d2] of Protocol ['d5'].", {"d1", "d2", "d5"}
    )
    assert valid == ["d1", "d2", "d5"] and invalid == ["d9"]
    assert clean_short_answer('Answer: "Chief of Protocol" [d2].\nBecause ...') == "Chief of Protocol"
    # titles as ids may hold commas, semicolons and quotes (raw HotpotQA / 2Wiki context)
    titles = {"Clinton, Minnesota", '"Weird Al" Yankovic', "A; B", "d1"}
    valid, invalid = parse_citations(
        'In [Clinton, Minnesota] and ["Weird Al" Yankovic] [d1, A; B, Minnesota] [A; B]', titles
    )
    assert valid == ["Clinton, Minnesota", '"Weird Al" Yankovic', "d1", "A; B"]
    assert invalid == ["Minnesota"]
    assert clean_short_answer("") == ""
    # a citation cut off by max_tokens does not stay in the answer (nor feed a bridge query)
    assert clean_short_answer("Chief of Protocol [hpdev-01011") == "Chief of Protocol"
    assert clean_short_answer("Chief of Protocol [d2] [hpdev-0") == "Chief of Protocol"
    assert clean_short_answer("[1990") == ""


async def test_answerer_long_and_short() -> None:
    eng = ScriptedEngine(["She was Chief of Protocol [d2], after playing Corliss Archer [d1] [hpdev-1]."])
    ans = await Answerer(eng).aanswer(Q, DOCS[:3])
    assert ans.citations == ["d2", "d1"] and ans.invalid_citations == ["hpdev-1"]
    assert ans.mode == "long" and "Chief of Protocol" in ans.answer
    user = eng.calls[0]["messages"][-1]["content"]
    assert "[d1] Kiss and Tell:" in user and "[d4]" not in user
    assert ans.trace[0].input["evidence"] == ["d1", "d2", "d3"]
    short = await Answerer(ScriptedEngine(["Chief of Protocol [d2]"]), mode="short").aanswer(Q, DOCS)
    assert short.answer == "Chief of Protocol" and short.citations == ["d2"]
    empty = await Answerer(ScriptedEngine(["[d2]"]), mode="short").aanswer(Q, DOCS)
    assert empty.fallback and empty.answer == "" and empty.trace[0].fallback
    none = await Answerer(ScriptedEngine(["unknown"]), mode="short").aanswer(Q, [])
    assert none.answer == "unknown" and none.citations == []


async def test_decomposer_salvages_quoted_questions_from_broken_json() -> None:
    # What SmolLM2-135M really wrote for a HotpotQA question (unbalanced, invalid JSON).
    raw = (
        '\n    {"sub_question": "Who played Corliss Archer in the film Kiss and Tell?", "name": "Lena")},\n'
        '    {"sub_question": "What \\"position\\" did she hold?", "name": "Lena")}\n]}'
    )
    eng = ScriptedEngine([raw])
    dec = await Decomposer(eng).adecompose(Q)
    assert dec.sub_questions == [
        "Who played Corliss Archer in the film Kiss and Tell?",
        'What "position" did she hold?',
    ]
    assert dec.trace[0].output["salvaged"] is True and len(eng.calls) == 1


async def test_decomposer_turns_find_first_into_the_bridge_sub_question() -> None:
    # What Qwen2.5-Coder-0.5B wrote for HotpotQA's first question: it names the hidden
    # entity, then copies the whole question as the only sub-question.
    ff = "the woman who portrayed Corliss Archer in the film Kiss and Tell"
    eng = ScriptedEngine([dec_out(Q, find_first=ff)] * 3)
    dec = await Decomposer(eng).adecompose(Q)
    # the copied question is dropped; the bridge sub-question is enough, so no re-ask
    assert dec.sub_questions == [f"Who or what is {ff}?"] and dec.n_new == 1
    assert dec.trace[0].output["added_bridge_question"] == f"Who or what is {ff}?"
    assert dec.restated == 1 and dec.trace[0].output["restated"] == [Q] and not dec.reasked
    plain = await Decomposer(eng, bridge_question=False).adecompose(Q)
    assert Q not in plain.sub_questions and plain.reask_reason == "restated" and plain.restated == 2
    # not added when a sub-question already asks about it
    eng2 = ScriptedEngine([dec_out(f"Who is {ff}?", "What position did she hold?", find_first=ff)])
    dec2 = await Decomposer(eng2).adecompose(Q)
    assert dec2.sub_questions == [f"Who is {ff}?", "What position did she hold?"]
