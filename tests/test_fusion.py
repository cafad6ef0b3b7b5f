"""PriorFusion: a ranker's order fused with the first-stage order (weighted RRF)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rank_data import dl19_query

from hoprank.errors import ConfigError
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.rankers import FIRST, BaseRanker, Identity, PriorFusion, RankerOutput, make_ranker
from hoprank.runs import rrf_fuse
from hoprank.types import Document

DOCS = [Document(id=f"d{i}", text=f"passage {i}") for i in range(6)]


class Reverse(BaseRanker):
    name = "reverse"

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        return RankerOutput(docs[::-1])


def test_weight_zero_is_the_model_order_and_a_large_weight_the_input_order() -> None:
    assert PriorFusion(Reverse(), weight=0).rank("q", DOCS).ids == [d.id for d in DOCS[::-1]]
    assert PriorFusion(Reverse(), weight=10).rank("q", DOCS).ids == [d.id for d in DOCS]


def test_equal_weights_interleave_and_ties_keep_the_model_order() -> None:
    # reversed vs input with equal weights: d5/d0 tie (1/61 + 1/66), the model's d5 first
    assert PriorFusion(Reverse(), weight=1).rank("q", DOCS).ids == ["d5", "d0", "d4", "d1", "d3", "d2"]


def test_fused_ranking_is_a_permutation_with_top_k_usage_and_trace() -> None:
    r = PriorFusion(Reverse(), weight=0.5).rank("q", DOCS, top_k=3)
    assert len(r.ids) == 3 and set(r.ids) <= {d.id for d in DOCS}
    step = r.trace[-1]
    assert step.kind == "fusion" and step.input["model_order"] == [d.id for d in DOCS[::-1]]
    assert sorted(step.output["order"]) == sorted(d.id for d in DOCS)


def test_identity_fused_with_itself_is_unchanged() -> None:
    assert PriorFusion(Identity(), weight=1).rank("q", DOCS).ids == [d.id for d in DOCS]


@pytest.mark.parametrize("bad", [{"weight": -1}, {"weight": "x"}, {"weight": True}, {"k": -1}, {"k": 1.5}])
def test_bad_parameters_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PriorFusion(Reverse(), **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        PriorFusion(object(), weight=1)  # type: ignore[arg-type]


def test_make_ranker_wraps_on_prior_weight() -> None:
    engine = ScriptedEngine(logprobs_fn=lambda m, c, p: {})
    r = make_ranker("first", engine, prior_weight=0.7, prior_k=10, window=4)
    assert isinstance(r, PriorFusion) and isinstance(r.inner, FIRST)
    assert (r.weight, r.k, r.inner.window_cfg.window) == (0.7, 10, 4)
    with pytest.raises(ConfigError):
        make_ranker("identity", None, prior_weight=-2)


def test_wrapper_describes_its_inner_ranker() -> None:
    engine = ScriptedEngine(logprobs_fn=lambda m, c, p: {})
    r = make_ranker("first", engine, prior_weight=0.5, window=4)
    d = r.describe()
    inner = d["inner"]
    assert d["name"] == "first+prior" and d["params"] == {"weight": 0.5, "k": 60}
    assert inner["name"] == "first" and inner["params"]["window"] == 4 and inner["params"]["step"] is None
    assert d["prompt"] == inner["prompt"] == r.inner.prompt.ref  # type: ignore[attr-defined]
    assert d["engine"] == inner["engine"] == engine.describe()
    assert PriorFusion(Identity()).describe()["prompt"] is None


async def test_first_fused_with_bm25_on_smollm2_dl19(smollm2_engine: object, datasets_dir: Path) -> None:
    query, docs = dl19_query(datasets_dir, k=10)
    plain = await FIRST(smollm2_engine, window=10, max_passage_tokens=32).arank(query, docs)  # type: ignore[arg-type]
    fused = await PriorFusion(
        FIRST(smollm2_engine, window=10, max_passage_tokens=32),
        weight=1.0,  # type: ignore[arg-type]
    ).arank(query, docs)
    assert sorted(fused.ids) == sorted(d.id for d in docs)
    assert fused.trace[-1].input["model_order"] == plain.ids  # deterministic model order
    assert fused.ids == [d.id for d in rrf_fuse([plain.documents, docs], weights=[1.0, 1.0])]
    assert fused.usage.llm_calls == plain.usage.llm_calls >= 1
