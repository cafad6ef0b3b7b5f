"""Setwise heapsort / bubble sort and permutation self-consistency: control flow on the
scripted engine (exact sorts, call counts, memo), then real models on real DL19 data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rank_data import dl19_query, handcrafted, make_docs, rel
from rank_data import relevance_logprobs as oracle

from hoprank.errors import CapabilityMissing, ConfigError
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.rankers import BaseRanker, RankerOutput, SelfConsistency, Setwise, make_ranker
from hoprank.rankers.consistency import aggregate_rankings
from hoprank.types import Document


@pytest.mark.parametrize("method", ["heapsort", "bubblesort"])
@pytest.mark.parametrize("num_child", [2, 3, 4])
async def test_setwise_sorts_the_top_k_exactly_with_an_oracle(method: str, num_child: int) -> None:
    docs = make_docs(20, seed=num_child)
    eng = ScriptedEngine(logprobs_fn=oracle)
    ranking = await Setwise(eng, num_child=num_child, method=method, k=10).arank("q", docs)
    assert sorted(ranking.ids) == sorted(d.id for d in docs)
    assert [rel(d) for d in ranking.documents[:10]] == list(range(19, 9, -1))
    # the rest keep their first-stage order
    rest = [d.id for d in ranking.documents[10:]]
    assert rest == [d.id for d in docs if d.id in set(rest)]
    calls = [c for c in eng.calls if c["method"] == "next_token_logprobs"]
    assert len(calls) == len(ranking.trace) and all(s.kind == "setwise" for s in ranking.trace)
    for call in calls:
        assert 2 <= len(call["candidates"]) <= num_child + 1 and call["prefill"] == "["
    # no comparison is asked twice within a query
    asked = [tuple(s.input["compared"]) for s in ranking.trace]
    assert len(asked) == len(set(asked))
    if method == "heapsort":
        assert len(calls) < 20 * 10 // num_child  # far fewer than bubble sort's worst case


async def test_setwise_top_k_argument_and_small_inputs() -> None:
    docs = make_docs(7, seed=3)
    eng = ScriptedEngine(logprobs_fn=oracle)
    r = await Setwise(eng, num_child=3, k=10).arank("q", docs, top_k=2)
    assert [rel(d) for d in r.documents] == [6, 5]
    two = await Setwise(eng, num_child=3).arank("q", docs[:2])
    assert [rel(d) for d in two.documents] == sorted((rel(d) for d in docs[:2]), reverse=True)


def test_setwise_bad_config() -> None:
    eng = ScriptedEngine(logprobs_fn=oracle)
    with pytest.raises(ConfigError):
        Setwise(eng, num_child=0)
    with pytest.raises(ConfigError):
        Setwise(eng, method="quicksort")
    with pytest.raises(ConfigError):
        Setwise(eng, k=0)
    with pytest.raises(CapabilityMissing):
        Setwise(ScriptedEngine(["x"]))
    assert isinstance(make_ranker("setwise", eng, num_child=2), Setwise)


def test_aggregate_rankings() -> None:
    ids = ["a", "b", "c", "d"]
    assert aggregate_rankings([["b", "a", "c", "d"], ["b", "c", "a", "d"], ["a", "b", "c", "d"]], ids) == [
        "b",
        "a",
        "c",
        "d",
    ]
    assert aggregate_rankings([["d", "c", "b", "a"]], ids, "rrf") == ["d", "c", "b", "a"]
    with pytest.raises(ConfigError):
        aggregate_rankings([["a", "b"]], ids)
    with pytest.raises(ConfigError):
        aggregate_rankings([ids], ids, "kemeny-exact")


class _FirstShownWins(BaseRanker):
    """A ranker that returns the order it was shown (copies its input, as RankGPT often does)."""

    name = "copy"

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        self.seen.append([d.id for d in docs])
        return RankerOutput(list(docs))


async def test_self_consistency_shuffles_are_seeded_and_aggregated() -> None:
    docs = make_docs(8)
    inner = _FirstShownWins()
    sc = SelfConsistency(inner, samples=5, seed=7)
    r1 = await sc.arank("q", docs)
    seen1 = list(inner.seen)
    assert len(seen1) == 5 and len({tuple(s) for s in seen1}) > 1
    assert all(sorted(s) == sorted(d.id for d in docs) for s in seen1)
    inner.seen.clear()
    r2 = await sc.arank("q", docs)
    assert inner.seen == seen1 and r2.ids == r1.ids  # reproducible
    assert r1.ids == aggregate_rankings(seen1, [d.id for d in docs])
    assert r1.trace[-1].kind == "aggregate" and r1.trace[-1].input["samples"] == seen1
    inner.seen.clear()
    await SelfConsistency(inner, samples=2, include_input=True).arank("q", docs)
    assert inner.seen[0] == [d.id for d in docs]
    with pytest.raises(ConfigError):
        SelfConsistency(inner, samples=0)
    with pytest.raises(ConfigError):
        SelfConsistency(inner, aggregate="mode")
    eng = ScriptedEngine(logprobs_fn=oracle)
    wrapped = make_ranker("first", eng, window=4, samples=3, sc_seed=1)
    assert isinstance(wrapped, SelfConsistency) and wrapped.samples == 3 and wrapped.seed == 1
    ranking = await wrapped.arank("q", docs)
    assert [rel(d) for d in ranking.documents[:3]] == [7, 6, 5]
    assert ranking.usage.llm_calls == sum(1 for c in eng.calls if c["method"] == "next_token_logprobs")


# ----------------------------------------------------------------------------- real models


async def test_setwise_smollm2_dl19_plumbing(smollm2_engine: Any, datasets_dir: Path) -> None:
    query, docs = dl19_query(datasets_dir, k=8)
    r = await Setwise(smollm2_engine, num_child=3, k=4, max_passage_tokens=40).arank(query, docs)
    assert sorted(r.ids) == sorted(d.id for d in docs)
    assert r.usage.llm_calls == len(r.trace) >= 3 and r.usage.prompt_tokens > 0
    for step in r.trace:
        assert step.output["winner"] in step.input["compared"]
        assert step.input["label_tokens"] in ("prefill", "merged")


@pytest.mark.slow
@pytest.mark.parametrize("position", [0])
async def test_setwise_qwen05_finds_the_handcrafted_answer(qwen05_engine: Any, position: int) -> None:
    """Like FIRST's test: the 0.5B model has a strong label-A prior (with the relevant
    passage elsewhere it loses to the parent shown first), so only position 0 is asserted."""
    query, docs, gold = handcrafted(position)
    for method in ("heapsort", "bubblesort"):
        r = await Setwise(qwen05_engine, num_child=3, method=method, k=1).arank(query, docs)
        assert r.documents[0].id == gold, method
