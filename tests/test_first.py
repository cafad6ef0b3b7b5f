"""FIRST on the scripted engine: one logprob request per window, labels, calibration."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rank_data import LINE, dl19_query, handcrafted, make_docs, rel, relevance_logprobs

from hoprank.errors import CapabilityMissing, ConfigError
from hoprank.llm.base import Capability, Message
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.prompts import load_prompt
from hoprank.rankers import FIRST, make_ranker
from hoprank.rankers.first import log_softmax, rank_by_label_logprobs
from hoprank.types import Document

pytest_plugins = ["servers.fixtures"]


async def test_one_logprob_request_per_window_with_labels_and_prefill() -> None:
    """Fails if FIRST ever stops requesting next-token logprobs (or starts generating)."""
    docs = make_docs(25)
    eng = ScriptedEngine(logprobs_fn=relevance_logprobs)
    ranking = await FIRST(eng, window=10, step=5).arank("q", docs)
    assert sorted(ranking.ids) == sorted(d.id for d in docs)
    assert [rel(d) for d in ranking.documents[:5]] == [24, 23, 22, 21, 20]
    methods = [c["method"] for c in eng.calls]
    assert methods == ["next_token_logprobs"] * 4  # one per window, nothing generated
    spans = [(s.input["start"], s.input["end"]) for s in ranking.trace]
    assert spans == [(15, 25), (10, 20), (5, 15), (0, 10)]
    for call, step in zip(eng.calls, ranking.trace, strict=True):
        assert call["candidates"] == list("ABCDEFGHIJ")
        assert call["prefill"] == "["
        assert "[A] passage" in call["messages"][-1]["content"]
        assert step.prompt == load_prompt("first").ref
        assert step.input["prefill"] == "[" and step.input["calibrate"] is False
        assert set(step.output["scores"]) == set("ABCDEFGHIJ")
        assert step.output["missing"] == []
    assert ranking.usage.llm_calls == 4
    assert ranking.usage.completion_tokens == 0


async def test_missing_labels_go_last_in_prior_order() -> None:
    docs = make_docs(6)

    def partial(messages: Sequence[Message], candidates: Sequence[str], prefill: str) -> dict[str, float]:
        return {"E": -1.0, "B": -2.0, "A": -float("inf")}  # only E and B are scored

    eng = ScriptedEngine(logprobs_fn=partial)
    ranking = await FIRST(eng).arank("q", docs)
    assert ranking.ids == ["d4", "d1", "d0", "d2", "d3", "d5"]
    step = ranking.trace[0]
    assert step.output["missing"] == ["A", "C", "D", "F"]
    assert not step.fallback


async def test_no_label_scored_is_a_recorded_fallback() -> None:
    eng = ScriptedEngine(logprobs_fn=lambda m, c, p: {})
    docs = make_docs(4)
    ranking = await FIRST(eng).arank("q", docs)
    assert ranking.ids == [d.id for d in docs]
    assert ranking.trace[0].fallback and ranking.trace[0].error
    assert ranking.fallbacks == 1


async def test_calibration_removes_a_label_prior() -> None:
    """The fake model prefers label A strongly whatever the query; with the "N/A"
    calibration the relevance signal wins."""
    docs = [Document(id=f"d{i}", text=f"passage {i} rel{r}") for i, r in enumerate([0, 5, 1, 2])]

    def biased(messages: Sequence[Message], candidates: Sequence[str], prefill: str) -> dict[str, float]:
        content = messages[-1]["content"]
        found = dict(LINE.findall(content))
        signal = 0.0 if "search query: N/A" in content else 0.5
        return {lab: (4.0 if lab == "A" else 0.0) + signal * int(found[lab]) for lab in candidates}

    eng = ScriptedEngine(logprobs_fn=biased)
    plain = await FIRST(eng).arank("which passage", docs)
    assert plain.ids[0] == "d0"  # the prior wins without calibration
    eng = ScriptedEngine(logprobs_fn=biased)
    calibrated = await FIRST(eng, calibrate=True).arank("which passage", docs)
    assert calibrated.ids == ["d1", "d3", "d2", "d0"]
    assert len(eng.calls) == 2  # two forwards for the single window
    assert "search query: N/A" in eng.calls[1]["messages"][-1]["content"]
    assert calibrated.trace[0].input["calibrate"] is True
    assert calibrated.usage.llm_calls == 2


def test_rank_by_label_logprobs() -> None:
    r = rank_by_label_logprobs(["A", "B", "C"], {"A": -3.0, "B": -1.0, "C": -1.0})
    assert r.order == [1, 2, 0]  # tie B/C keeps prior order
    assert math.isclose(sum(math.exp(v) for v in r.scores.values()), 1.0)
    r = rank_by_label_logprobs(["A", "B", "C"], {"A": -3.0, "B": -1.0}, {"A": -5.0, "B": -0.5})
    assert r.order == [0, 1, 2] and r.missing == ["C"]
    # a label the calibration did not return (top-k only) is not pushed to the end: it
    # takes the lowest calibration value reported
    r = rank_by_label_logprobs(list("ABC"), {"A": -1.0, "B": -2.0, "C": -0.5}, {"A": -0.5, "B": -1.0})
    assert r.order[0] == 2 and r.missing == [] and set(r.scores) == {"A", "B", "C"}
    # a calibration with nothing usable is ignored
    r = rank_by_label_logprobs(list("AB"), {"A": -2.0, "B": -1.0}, {})
    assert r.order == [1, 0]
    assert log_softmax({}) == {}


def test_capabilities_and_label_limits() -> None:
    with pytest.raises(CapabilityMissing, match="token_logprobs"):
        FIRST(ScriptedEngine(["x"]))
    eng = ScriptedEngine(logprobs_fn=relevance_logprobs)
    with pytest.raises(ConfigError, match="26"):
        FIRST(eng, window=30)
    no_prefill = ScriptedEngine(
        logprobs_fn=relevance_logprobs, capabilities=frozenset({Capability.TOKEN_LOGPROBS})
    )
    ranker = make_ranker("first", no_prefill, window=4)
    assert isinstance(ranker, FIRST) and ranker.prefill == ""
    ranker.rank("q", make_docs(3))
    assert no_prefill.calls[0]["prefill"] == ""


async def test_merged_label_tokens_score_bracket_letter_candidates_without_prefill() -> None:
    def merged_logprobs(
        messages: Sequence[Message], candidates: Sequence[str], prefill: str
    ) -> dict[str, float]:
        found = dict(LINE.findall(messages[-1]["content"]))
        assert prefill == "" and all(c.startswith("[") for c in candidates)
        return {c: -10.0 + 0.3 * int(found[c[1:]]) for c in candidates}

    docs = make_docs(8)
    eng = ScriptedEngine(logprobs_fn=merged_logprobs)
    ranking = await FIRST(eng, window=8, label_tokens="merged").arank("q", docs)
    assert [rel(d) for d in ranking.documents] == list(range(7, -1, -1))
    assert eng.calls[0]["candidates"] == [f"[{c}" for c in "ABCDEFGH"]
    assert ranking.trace[0].input["label_tokens"] == "merged"
    # the scripted engine's whitespace tokenizer is not the model's own: auto keeps the prefill
    assert FIRST(ScriptedEngine(logprobs_fn=merged_logprobs), window=8).label_tokens == "prefill"


def test_label_tokens_errors() -> None:
    eng = ScriptedEngine(logprobs_fn=lambda m, c, p: {})
    with pytest.raises(ConfigError):
        FIRST(eng, label_tokens="letters")
    no_prefill = ScriptedEngine(
        logprobs_fn=lambda m, c, p: {}, capabilities=frozenset({Capability.TOKEN_LOGPROBS})
    )
    with pytest.raises(ConfigError):
        FIRST(no_prefill, label_tokens="merged")


# ----------------------------------------------------------------------------- real models


@pytest.mark.slow
async def test_first_on_smollm2_dl19(smollm2_engine: object, datasets_dir: Path) -> None:
    query, docs = dl19_query(datasets_dir, k=20)
    ranker = FIRST(smollm2_engine, window=10, step=5, max_passage_tokens=32)  # type: ignore[arg-type]
    ranking = await ranker.arank(query, docs)
    assert sorted(ranking.ids) == sorted(d.id for d in docs)
    assert len(ranking.trace) == 3
    for s in ranking.trace:
        assert s.output["missing"] == [] and not s.fallback
        probs = [math.exp(v) for v in s.output["scores"].values()]
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-3)  # renormalised over the 10 labels
        assert max(probs) - min(probs) > 1e-3  # real logits, not a constant
        assert s.output["raw_top"]
    assert ranking.usage.completion_tokens == 0 and ranking.usage.llm_calls == 3


@pytest.mark.slow
@pytest.mark.parametrize("position", [0])
async def test_first_finds_the_relevant_passage_on_qwen05(qwen05_engine: object, position: int) -> None:
    """One forward per window, merged label tokens (``[A``, ``[B`` ... as Qwen writes them).
    The 0.5B model still has a position prior (at position 6 this passage ranks 6th with
    one forward), so position independence is tested with rotations below."""
    query, docs, relevant = handcrafted(position)
    ranking = await FIRST(qwen05_engine, window=10).arank(query, docs)  # type: ignore[arg-type]
    assert ranking.ids.index(relevant) < 3, ranking.trace[0].output["doc_scores"]
    assert ranking.usage.llm_calls == 1
    step = ranking.trace[0]
    assert step.input["label_tokens"] == "merged" and step.input["prefill"] == ""


@pytest.mark.slow
@pytest.mark.parametrize("position", [0, 6])
async def test_rotation_debiasing_on_qwen05(qwen05_engine: object, position: int) -> None:
    """``shifts`` = window size shows every passage at every position (10 forwards)."""
    query, docs, relevant = handcrafted(position)
    ranking = await FIRST(qwen05_engine, window=10, shifts=len(docs)).arank(query, docs)  # type: ignore[arg-type]
    assert ranking.ids.index(relevant) < 3, ranking.trace[0].output["doc_scores"]
    assert ranking.usage.llm_calls == len(docs)


@pytest.mark.slow
def test_label_token_forms_follow_the_tokenizer(qwen05_engine: Any, smollm2_engine: Any) -> None:
    """Qwen merges ``[`` with most capitals but not ``O``/``Q``: FIRST labels with the
    merging letters and scores ``[X`` tokens; SmolLM2 never merges: ``[`` prefill + ``X``."""
    qwen = FIRST(qwen05_engine, window=20)
    assert qwen.label_tokens == "merged" and qwen.prefill == "" and qwen.alphabet is not None
    assert "O" not in qwen.alphabet and "Q" not in qwen.alphabet and len(qwen.alphabet) >= 20
    for letter in qwen.alphabet:
        assert len(qwen05_engine.tokenizer.encode("[" + letter)) == 1
    assert FIRST(qwen05_engine, window=20, label_tokens="prefill").prefill == "["
    smol = FIRST(smollm2_engine, window=20)
    assert smol.label_tokens == "prefill" and smol.prefill == "[" and smol.alphabet is None
    with pytest.raises(ConfigError):
        FIRST(smollm2_engine, window=20, label_tokens="merged")


@pytest.mark.slow
async def test_first_and_rankgpt_over_a_real_llamacpp_server(
    llamacpp_server: Any, datasets_dir: Path
) -> None:
    """The same rankers over the OpenAI-compatible engine (a real llama.cpp server with
    SmolLM2 on 127.0.0.1): labels come from ``top_logprobs``; any label outside it is
    recorded as missing and ranked after the scored ones."""
    from hoprank.llm.engines.openai_engine import OpenAIEngine
    from hoprank.rankers import RankGPT

    eng = OpenAIEngine("smollm2", base_url=llamacpp_server.base_url, server="llamacpp", timeout=120)
    query, docs = dl19_query(datasets_dir, k=6)
    ranking = await FIRST(eng, window=6, max_passage_tokens=40).arank(query, docs)
    assert sorted(ranking.ids) == sorted(d.id for d in docs)
    (step,) = ranking.trace
    assert set(step.output["scores"]) | set(step.output["missing"]) == set("ABCDEF")
    assert step.output["scores"], step.output  # at least some labels among the top tokens
    assert step.fallback is False and ranking.usage.llm_calls == 1

    ranking = await RankGPT(eng, window=6, max_passage_tokens=40, max_new_tokens=24).arank(query, docs)
    assert sorted(ranking.ids) == sorted(d.id for d in docs)
    assert ranking.trace[0].raw is not None and ranking.usage.completion_tokens > 0


def test_no_prefill_engine_with_the_models_tokenizer_labels_with_single_token_brackets() -> None:
    from hoprank.llm.engines.openai_engine import OpenAIEngine

    exact = OpenAIEngine("gpt-4o", base_url="http://127.0.0.1:9/v1", api_key="sk-test")
    ranker = FIRST(exact, window=20)
    labels = ranker.labels_for(20)
    assert ranker.prefill == "" and len(labels) == 20
    assert all(len(exact.tokenizer.encode(f"[{c}")) == 1 for c in labels)
    assert not {"H", "O", "Q"} & set(labels)  # o200k splits "[H", "[O", "[Q"
    # an approximate tokenizer (a model tiktoken does not know) keeps the plain A..T
    approx = OpenAIEngine("served-open-model", base_url="http://127.0.0.1:9/v1", api_key="sk-test")
    assert not approx.tokenizer_exact
    # declared capabilities: tiktoken's own encoding is exact, the o200k stand-in is not;
    # neither renders the chat template
    assert Capability.EXACT_TOKENIZER in exact.capabilities and Capability.RENDER not in exact.capabilities
    assert not {Capability.EXACT_TOKENIZER, Capability.RENDER} & approx.capabilities
    assert "".join(FIRST(approx, window=20).labels_for(20)) == "ABCDEFGHIJKLMNOPQRST"


async def test_calibration_prompt_shows_the_same_passage_cuts() -> None:
    """A long query leaves less room per passage than "N/A": the calibration prompt must
    still show exactly the passages the real prompt showed (sized once, for both)."""
    words = " ".join(f"w{i}" for i in range(200))
    docs = [Document(id=f"d{i}", text=f"rel{i} {words}") for i in range(4)]
    eng = ScriptedEngine(logprobs_fn=relevance_logprobs, context_window=700)
    long_query = " ".join(["which"] * 100)
    await FIRST(eng, calibrate=True).arank(long_query, docs)
    real, cal = (c["messages"][-1]["content"] for c in eng.calls)
    assert "search query: N/A" in cal and long_query in real
    passages = re.compile(r"^\[[A-D]\] .*$", re.M)
    assert passages.findall(real) == passages.findall(cal)
    assert len(passages.findall(real)) == 4 and "w199" not in real  # cut to fit
    assert all(sum(eng.tokenizer.count(m["content"]) for m in c["messages"]) <= 700 for c in eng.calls)
