"""Agents take their numeric parameters as keywords or as one config."""

from __future__ import annotations

import pytest
from agents_fakes import FakeRetriever

from hoprank.agents.multihop import Budget, MultiHopAgent, MultiHopConfig
from hoprank.agents.pipeline import DecomposeRetrieveRerank, PipelineConfig
from hoprank.errors import ConfigError, InvalidInput
from hoprank.llm.engines.scripted import ScriptedEngine


@pytest.fixture
def retriever() -> FakeRetriever:
    return FakeRetriever()


def test_multihop_config_or_keywords(retriever: FakeRetriever) -> None:
    eng = ScriptedEngine([])
    a = MultiHopAgent(eng, retriever, k=3, max_tokens=50, budget=Budget(max_steps=2))
    b = MultiHopAgent(eng, retriever, config=MultiHopConfig(k=3, max_tokens=50, budget=Budget(max_steps=2)))
    assert (a.k, a.max_tokens, a.budget) == (b.k, b.max_tokens, b.budget) == (3, 50, Budget(max_steps=2))
    assert MultiHopAgent(eng, retriever, budget=None).budget == Budget()
    with pytest.raises(InvalidInput):
        MultiHopAgent(eng, retriever, k=0)
    with pytest.raises(ConfigError):
        MultiHopAgent(eng, retriever, kk=3)


def test_pipeline_config_or_keywords(retriever: FakeRetriever) -> None:
    a = DecomposeRetrieveRerank(retriever, k=7, top_k=2)
    b = DecomposeRetrieveRerank(retriever, config=PipelineConfig(k=7), top_k=2)
    assert (a.k, a.top_k, a.pool_depth) == (b.k, b.top_k, b.pool_depth) == (7, 2, 20)
    with pytest.raises(InvalidInput):
        DecomposeRetrieveRerank(retriever, original_weight=-1)
    with pytest.raises(ConfigError):
        DecomposeRetrieveRerank(retriever, pool=3)
