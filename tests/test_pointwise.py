"""PointwiseLLM on the scripted engine: yes/no margins, batching, ties, missing tokens."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from rank_data import dl19_query, handcrafted

from hoprank.errors import CapabilityMissing, PromptError
from hoprank.llm.base import LogprobRequest, Message, TokenLogprobs
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.prompts import load_prompt
from hoprank.rankers import PointwiseLLM, make_ranker
from hoprank.rankers.pointwise import yes_no_score
from hoprank.types import Document

SCORE = re.compile(r"score(-?\d+)")


def judge(messages: Sequence[Message], candidates: Sequence[str], prefill: str) -> dict[str, float]:
    s = int(SCORE.search(messages[-1]["content"]).group(1))  # type: ignore[union-attr]
    return {"Yes": -5.0 + s, "No": -5.0}


def docs_with(scores: list[int]) -> list[Document]:
    return [Document(id=f"d{i}", text=f"passage {i} score{s}") for i, s in enumerate(scores)]


async def test_scores_order_batches_and_ties() -> None:
    eng = ScriptedEngine(logprobs_fn=judge)
    ranker = PointwiseLLM(eng, batch_size=4)
    ranking = await ranker.arank("q", docs_with([1, 3, 0, 3, -2, 5, 1, 0, 2, 4]))
    assert ranking.ids == ["d5", "d9", "d1", "d3", "d8", "d0", "d6", "d2", "d7", "d4"]  # ties in prior order
    assert [d.score for d in ranking.documents[:2]] == [5.0, 4.0]
    assert [c["candidates"] for c in eng.calls] == [["Yes", "No"]] * 10
    assert all(c["prefill"] == "" for c in eng.calls)
    assert [(s.input["start"], s.input["end"]) for s in ranking.trace] == [(0, 4), (4, 8), (8, 10)]
    assert all(s.prompt == load_prompt("pointwise").ref for s in ranking.trace)
    assert ranking.usage.llm_calls == 10


async def test_passages_are_cut_to_the_budget() -> None:
    eng = ScriptedEngine(logprobs_fn=lambda m, c, p: {"Yes": -1.0, "No": -2.0})
    long = " ".join(f"w{i}" for i in range(400))
    await PointwiseLLM(eng, max_passage_tokens=30).arank(
        "q", [Document(id="a", text=long), Document(id="b", text="x")]
    )
    content = eng.calls[0]["messages"][-1]["content"]
    assert "w29" in content and "w30" not in content


def test_yes_no_score_with_missing_tokens() -> None:
    assert yes_no_score(TokenLogprobs(logprobs={"Yes": -1.0, "No": -3.0}), "Yes", "No") == 2.0
    floor = {"a": -0.1, "b": -6.0}
    assert yes_no_score(TokenLogprobs(logprobs={"Yes": -1.0}, raw_top=floor), "Yes", "No") == 5.0
    assert yes_no_score(TokenLogprobs(logprobs={"No": -1.0}, raw_top=floor), "Yes", "No") == -5.0
    assert yes_no_score(TokenLogprobs(logprobs={}), "Yes", "No") is None


async def test_unscored_documents_follow_in_prior_order() -> None:
    class Partial(ScriptedEngine):
        async def next_token_logprobs_batch(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
            out = []
            for r in requests:
                s = int(SCORE.search(r.messages[-1]["content"]).group(1))  # type: ignore[union-attr]
                out.append(TokenLogprobs(logprobs={} if s < 0 else {"Yes": float(s), "No": 0.0}))
            return out

    eng = Partial(logprobs_fn=judge)
    ranking = await PointwiseLLM(eng).arank("q", docs_with([-1, 2, -1, 1]))
    assert ranking.ids == ["d1", "d3", "d0", "d2"]
    assert ranking.documents[-1].score is None
    assert ranking.trace[0].output["unscored"] == ["d0", "d2"]


def test_validation() -> None:
    with pytest.raises(CapabilityMissing):
        PointwiseLLM(ScriptedEngine(["x"]))
    with pytest.raises(PromptError):
        PointwiseLLM(ScriptedEngine(logprobs_fn=judge), prompt="rankgpt")
    assert isinstance(make_ranker("pointwise", ScriptedEngine(logprobs_fn=judge)), PointwiseLLM)


# ----------------------------------------------------------------------------- real models


@pytest.mark.slow
async def test_pointwise_on_smollm2_dl19(smollm2_engine: object, datasets_dir: Path) -> None:
    query, docs = dl19_query(datasets_dir, k=20)
    ranking = await PointwiseLLM(smollm2_engine, max_passage_tokens=48).arank(query, docs)  # type: ignore[arg-type]
    assert sorted(ranking.ids) == sorted(d.id for d in docs)
    scores = [d.score for d in ranking.documents]
    assert all(s is not None and math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert len(set(scores)) > 1
    assert len(ranking.trace) == 2 and ranking.usage.llm_calls == 20


@pytest.mark.slow
@pytest.mark.parametrize("position", [0, 6])
async def test_pointwise_finds_the_relevant_passage_on_qwen05(qwen05_engine: object, position: int) -> None:
    query, docs, relevant = handcrafted(position)
    ranking = await PointwiseLLM(qwen05_engine).arank(query, docs)  # type: ignore[arg-type]
    assert ranking.ids.index(relevant) < 3, [(d.id, d.score) for d in ranking.documents]
