"""Multi-hop beyond two hops, scripted engines: the restatement rule and its re-ask and
fallback in the Decomposer, ``#k`` references, and the pipeline's chain bridge."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from agents_fakes import FakeRetriever

from hoprank.agents import Answerer, Decomposer, DecomposeRetrieveRerank, PipelineResult
from hoprank.agents.hops import (
    RESTATE_JACCARD,
    clean_sub_questions,
    has_references,
    references,
    restates,
    rule_split,
    substitute,
    token_jaccard,
)
from hoprank.agents.pipeline import PipelineConfig
from hoprank.errors import ConfigError
from hoprank.llm.base import Message
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.prompts import load_prompt
from hoprank.types import Document

Q = "What government position was held by the woman who portrayed Corliss Archer in the film Kiss and Tell?"
DUNE = "When was the university attended by the author of the novel Dune founded?"
HOP1, HOP2, HOP3 = "Who wrote the novel Dune?", "Which university did #1 attend?", "When was #2 founded?"
DOCS = [
    Document(id="dune", title="Dune (novel)", text="Dune is a 1965 novel by Frank Herbert."),
    Document(
        id="herbert", title="Frank Herbert", text="Frank Herbert attended the University of Washington."
    ),
    Document(
        id="uw", title="University of Washington", text="The University of Washington was founded in 1861."
    ),
    Document(id="other", title="Arrakis", text="Arrakis is the desert planet of the novel."),
]
ANSWERS = {"Dune": "Frank Herbert", "Herbert": "University of Washington", "Washington": "1861"}


def dec(*subs: str, find_first: str = "") -> str:
    """A decompose@1 reply as the continuation of its prefill ``{"find_first": "``."""
    return json.dumps({"find_first": find_first, "sub_questions": list(subs)})[len('{"find_first": "') :]


def chain(*subs: str) -> str:
    """A decompose-chain@1 reply as the continuation of its prefill ``{"sub_questions": ["``."""
    return json.dumps({"sub_questions": list(subs)})[len('{"sub_questions": ["') :]


def answer_by_keyword(messages: Sequence[Message]) -> str:
    """A short answer chosen by the first ANSWERS keyword in the question asked."""
    question = messages[-1]["content"].rsplit("Question:", 1)[-1]
    return next((f"{a} [dune]" for key, a in ANSWERS.items() if key in question), "unknown [dune]")


def asked(engine: ScriptedEngine) -> list[str]:
    return [c["messages"][-1]["content"].rsplit("Question: ", 1)[-1] for c in engine.calls]


# -- the restatement rule -------------------------------------------------------------
def test_restatement_rule_is_normalised_equality_or_token_jaccard_090() -> None:
    assert RESTATE_JACCARD == 0.9
    assert restates(Q.upper().rstrip("?") + " ?!", Q)
    # one token more among 17: 17/18 = 0.94 -> a restatement
    assert restates(Q.replace("film", "1945 film"), Q)
    # two tokens changed: 15/19 = 0.79 -> a sub-question
    near = Q.replace("government position", "job")
    assert token_jaccard(near, Q) < RESTATE_JACCARD and not restates(near, Q)
    assert not restates("Who portrayed Corliss Archer in the film Kiss and Tell?", Q)
    assert not restates("", Q) and not restates("?", Q)


def test_references_and_substitution() -> None:
    assert references("Were #1 and [2] born in the same country as {#1}?", 3) == [1, 2]
    assert references("What was the #1 hit of 1990?", 1) == []  # not an earlier hop
    assert references("Who sang the #12 hit?", 3) == []
    assert has_references([HOP1, HOP2]) and not has_references(["What was the #1 hit?", "Who sang it?"])
    assert substitute("Were #1 and [#2] born in #3?", {1: "Nolan", 2: "Herbert"}, 3) == (
        "Were Nolan and Herbert born in #3?"
    )


def test_dropping_and_inserting_sub_questions_renumbers_references() -> None:
    # the model wrote the question first: "#2" meant "Who wrote the novel Dune?"
    kept, dropped = clean_sub_questions(
        [DUNE, HOP1, "Which university did #2 attend?", "When was #3 founded?"], DUNE
    )
    assert kept == [HOP1, HOP2, HOP3] and dropped == [DUNE]
    # a repeat maps to its first place; an added bridge question shifts everything by one
    kept, _ = clean_sub_questions(
        [HOP1, HOP1.lower(), "Which university did #2 attend?"], DUNE, first="Who is X?"
    )
    assert kept == ["Who is X?", HOP1, "Which university did #2 attend?"]
    # a reference to a dropped restatement keeps its text
    kept, _ = clean_sub_questions(["Who wrote Dune?", "Who wrote Dune?", "Where was #2 born?"], "x y")
    assert kept == ["Who wrote Dune?", "Where was #1 born?"]
    kept, _ = clean_sub_questions(["Dune author", "Dune author?", "Where was #2 born?"], "Dune author")
    assert kept == ["Where was Dune author born?"]
    # ... unless that makes it a restatement too (seen with Qwen2.5-Coder-0.5B)
    q = "Who was born first, Erika Jayne or Marco Da Silva"
    kept, dropped = clean_sub_questions([q + "?", "Who was born first, #1?", "When was Erika Jayne born?"], q)
    assert kept == ["When was Erika Jayne born?"] and dropped == [q + "?", "Who was born first, #1?"]


def test_rule_split_patterns() -> None:
    assert rule_split(Q, chained=True) == [
        "Who or what is the woman who portrayed Corliss Archer in the film Kiss and Tell?",
        "What government position was held by #1?",
    ]
    assert rule_split("Were Scott Derrickson and Ed Wood of the same nationality?") == [
        "Who or what is Scott Derrickson?",
        "Who or what is Ed Wood?",
    ]
    assert rule_split("Which magazine was started first, Arthur's Magazine or First for Women?") == [
        "Who or what is Arthur's Magazine?",
        "Who or what is First for Women?",
    ]
    assert rule_split('The director of the film "Big Stone Gap" is based in what city?', chained=True) == [
        'Who or what is the director of the film "Big Stone Gap"?',
        "#1 is based in what city?",
    ]
    assert rule_split("Shirley Temple protocol") == []


# -- Decomposer: original returned -> re-ask -> fallback ------------------------------
async def test_decomposer_reasks_with_the_stricter_instruction_when_only_the_question_came_back() -> None:
    good = dec("Who portrayed Corliss Archer in Kiss and Tell?", "What position did that woman hold?")
    eng = ScriptedEngine([dec(Q.lower(), Q + " "), good])
    d = await Decomposer(eng).adecompose(Q)
    assert d.sub_questions == [
        "Who portrayed Corliss Archer in Kiss and Tell?",
        "What position did that woman hold?",
    ]
    assert d.reasked and d.reask_reason == "restated" and not d.fallback and d.restated == 1
    reask = eng.calls[1]["messages"]
    assert reask[-2]["role"] == "assistant" and reask[-1]["role"] == "user"
    assert f'only repeat the question "{Q}"' in reask[-1]["content"]
    assert reask[-1]["content"].startswith(str(load_prompt("decompose-chain@1").params["restated"])[:40])
    first, second = d.trace
    assert [first.name, second.name] == ["decompose", "decompose.reask"]
    assert first.output["restated"] == [Q.lower()] and "restates" in (first.error or "")
    assert second.input["reason"] == "restated" and second.output["restated"] == []
    assert d.counters == {
        "restated": 1,
        "reask_parse": 0,
        "reask_restated": 1,
        "fallback_rule_split": 0,
        "fallback_none": 0,
    }
    assert d.usage.llm_calls == 2


async def test_decomposer_falls_back_when_the_reask_restates_again_and_counts_it() -> None:
    eng = ScriptedEngine([dec(Q), dec(Q.replace("film", "1945 film"))])
    d = await Decomposer(eng).adecompose(Q)
    assert d.fallback and d.fallback_to == "rule_split" and d.reask_reason == "restated"
    assert d.sub_questions == [
        "Who or what is the woman who portrayed Corliss Archer in the film Kiss and Tell?"
    ]
    assert all(not restates(s, Q) for s in d.sub_questions) and len(eng.calls) == 2
    assert d.restated == 2 and d.trace[-1].fallback and d.trace[-1].output["fallback_to"] == "rule_split"
    assert d.counters["fallback_rule_split"] == 1 and d.counters["reask_restated"] == 1
    # the chained prompt's fallback refers to the bridge entity as #1
    eng2 = ScriptedEngine([chain(Q), chain(Q)])
    d2 = await Decomposer(eng2, prompt="decompose-chain").adecompose(Q)
    assert d2.sub_questions[1] == "What government position was held by #1?"
    assert eng2.calls[0]["prefill"] == '{"sub_questions": ["'
    # without re-ask: straight to the fallback; a question no rule splits gets none
    eng3 = ScriptedEngine([dec("Shirley Temple protocol?")])
    d3 = await Decomposer(eng3, reask=False).adecompose("Shirley Temple protocol")
    assert d3.sub_questions == [] and d3.fallback_to == "none" and len(eng3.calls) == 1
    assert d3.counters["fallback_none"] == 1 and d3.counters["reask_restated"] == 0


async def test_decomposer_drops_a_restatement_next_to_real_sub_questions_without_reask() -> None:
    eng = ScriptedEngine([dec(Q, "Who portrayed Corliss Archer?")])
    d = await Decomposer(eng).adecompose(Q)
    assert d.sub_questions == ["Who portrayed Corliss Archer?"] and d.restated == 1
    assert not d.reasked and not d.fallback and len(eng.calls) == 1
    # in a chain, the references after the dropped question are renumbered
    eng2 = ScriptedEngine([chain(DUNE, HOP1, "Which university did #2 attend?")])
    d2 = await Decomposer(eng2, prompt="decompose-chain").adecompose(DUNE)
    assert d2.sub_questions == [HOP1, HOP2] and d2.trace[0].output["restated"] == [DUNE]


# -- the chain bridge -----------------------------------------------------------------
def _chain_pipe(
    subs: str, answers: ScriptedEngine, retr: FakeRetriever, **kw: object
) -> DecomposeRetrieveRerank:
    return DecomposeRetrieveRerank(
        retr,
        decomposer=Decomposer(ScriptedEngine([subs]), prompt="decompose-chain"),
        bridge_answerer=Answerer(answers, mode="short"),
        bridge="chain",
        bridge_k=2,
        **kw,
    )


async def test_chain_bridge_substitutes_answers_hop_by_hop_over_three_hops() -> None:
    answers, retr = ScriptedEngine(answer_by_keyword), FakeRetriever(DOCS)
    res = await _chain_pipe(chain(HOP1, HOP2, HOP3), answers, retr, original_weight=2.0).arun(DUNE)
    hop2, hop3 = "Which university did Frank Herbert attend?", "When was University of Washington founded?"
    # hop 1 and hop 2 are answered in order, each after the substitution; hop 3 is only searched
    assert asked(answers) == [HOP1, hop2]
    main = f"{DUNE} Frank Herbert University of Washington"
    assert retr.queries == [DUNE, HOP1, hop2, hop3, main]  # "#k" sub-questions never searched raw
    assert [(h.index, h.refs, h.query, h.answer) for h in res.hops] == [
        (1, [], HOP1, "Frank Herbert"),
        (2, [1], hop2, "University of Washington"),
        (3, [2], hop3, None),
    ]
    assert all(h.resolved and not h.fallback for h in res.hops) and not res.hops[2].answered
    assert res.bridge == "Frank Herbert" and res.sub_questions == [HOP1, HOP2, HOP3]
    assert res.queries == [DUNE, HOP1, hop2, hop3, main]
    hops = [s for s in res.trace if s.name == "bridge.hop"]
    assert [s.input["query"] for s in hops] == [HOP1, hop2, hop3]
    assert [s.output["answer"] for s in hops] == ["Frank Herbert", "University of Washington", None]
    fuse = next(s for s in res.trace if s.kind == "fuse")
    assert fuse.input["weights"] == [2.0, 1.0, 1.0, 1.0, 2.0]  # the question and its answered form
    assert {"herbert", "uw", "dune"} <= set(res.ids)
    assert res.counters["hops"] == 3 and res.counters["hop_answers"] == 2
    assert res.counters["unresolved_refs"] == 0 and res.usage.llm_calls == 3
    assert PipelineResult.model_validate_json(res.model_dump_json()) == res


async def test_chain_bridge_resolves_bracket_and_multiple_references() -> None:
    subs = chain("Who wrote the novel Dune?", "What desert planet is in Dune?", "Did [1] invent [#2]?")

    def reply(messages: Sequence[Message]) -> str:
        q = messages[-1]["content"].rsplit("Question:", 1)[-1]
        return "Arrakis [other]" if "planet" in q else "Frank Herbert [dune]"

    answers, retr = ScriptedEngine(reply), FakeRetriever(DOCS)
    res = await _chain_pipe(subs, answers, retr).arun(DUNE)
    assert res.hops[2].refs == [1, 2] and res.hops[2].query == "Did Frank Herbert invent Arrakis?"
    assert [h.answered for h in res.hops] == [True, True, False]


async def test_chain_bridge_unusable_answer_keeps_the_question_in_the_next_hop() -> None:
    answers, retr = ScriptedEngine(["[dune]", "1861 [uw]"]), FakeRetriever(DOCS)
    res = await _chain_pipe(chain(HOP1, HOP2), answers, retr).arun(DUNE)
    first, second = res.hops
    assert first.fallback and first.answered and first.answer is None
    assert second.query == "Which university did Who wrote the novel Dune attend?" and not second.resolved
    assert res.counters["hop_fallbacks"] == 1 and res.counters["unresolved_refs"] == 1
    assert res.bridge is None and len(answers.calls) == 1  # hop 2 is last: not answered
    assert next(s for s in res.trace if s.name == "bridge.hop").fallback


async def test_chain_bridge_without_references_chains_implicitly() -> None:
    subs = dec("Who wrote the novel Dune?", "Which university did the author of Dune attend?")
    answers, retr = ScriptedEngine(answer_by_keyword), FakeRetriever(DOCS)
    pipe = DecomposeRetrieveRerank(
        retr,
        decomposer=Decomposer(ScriptedEngine([subs])),
        bridge_answerer=Answerer(answers, mode="short"),
        bridge="chain",
    )
    res = await pipe.arun(DUNE)
    assert [h.query for h in res.hops] == [
        "Who wrote the novel Dune?",
        "Which university did the author of Dune attend? Frank Herbert",
    ]
    assert res.hops[1].resolved and res.hops[1].answer is None


async def test_chain_option_is_validated_and_off_by_default() -> None:
    assert PipelineConfig().bridge == "one_hop"
    with pytest.raises(ConfigError):
        PipelineConfig(bridge="hops")
    # without a bridge answerer the chain option changes nothing: "#1" questions are searched
    retr = FakeRetriever(DOCS)
    pipe = DecomposeRetrieveRerank(
        retr,
        decomposer=Decomposer(ScriptedEngine([chain(HOP1, HOP2)]), prompt="decompose-chain"),
        bridge="chain",
    )
    res = await pipe.arun(DUNE)
    assert res.queries == [DUNE, HOP1, HOP2] and res.hops == [] and retr.queries == res.queries
