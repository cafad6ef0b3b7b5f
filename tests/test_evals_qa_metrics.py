"""Multi-hop QA metrics against hand-computed values, and the breakdown by metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from hoprank.evals import load_dataset
from hoprank.evals.dataset import Dataset, Query
from hoprank.evals.metrics import evaluate
from hoprank.evals.qa_metrics import (
    breakdown,
    breakdown_by,
    citation_precision,
    citation_recall,
    evaluate_qa,
    gold_mrr_at,
    hop_count,
    qa_question_metrics,
)
from hoprank.types import Document


def test_one_question_by_hand() -> None:
    ranked = ["x", "g1", "y", "z", "g2", "g3"]
    gold = {"g1", "g2", "g3"}
    row = qa_question_metrics(
        ranked,
        gold,
        prediction="The Eiffel tower!",
        answers=["Tour Eiffel", "eiffel tower"],
        cited=["g1", "x", "g1"],
        ks=(2, 5, 6),
    )
    assert (
        row["support_recall@2"] == 0.0 and row["support_recall@5"] == 0.0 and row["support_recall@6"] == 1.0
    )
    assert row["passage_recall@2"] == pytest.approx(1 / 3)  # g1 at rank 2
    assert row["passage_recall@5"] == pytest.approx(2 / 3)  # g1, g2
    assert row["passage_recall@6"] == 1.0
    assert row["mrr@10"] == 0.5
    assert row["em"] == 1.0 and row["f1"] == 1.0  # the alias matches after normalisation
    assert row["citation_precision"] == 0.5  # {g1, x}: one of two distinct ids is gold
    assert row["citation_recall"] == pytest.approx(1 / 3)


def test_f1_max_over_aliases_and_omissions() -> None:
    # "paris france" vs "Paris": p=1/2, r=1 -> 2/3; vs "Paris, France": 1.0 -> max 1.0
    assert qa_question_metrics(None, set(), prediction="paris france", answers=["Paris"])[
        "f1"
    ] == pytest.approx(2 / 3)
    row = qa_question_metrics(None, set(), prediction="paris france", answers=["Paris", "Paris, France"])
    assert row == {"em": 1.0, "f1": 1.0}
    assert qa_question_metrics(["a"], set(), cited=["a"]) == {}  # no gold: nothing rankable
    assert qa_question_metrics(["a"], {"a"}, answers=["x"]).keys() == {
        "support_recall@2",
        "support_recall@5",
        "support_recall@10",
        "passage_recall@2",
        "passage_recall@5",
        "passage_recall@10",
        "mrr@10",
    }
    assert gold_mrr_at(["a"] * 3 + ["b"] * 8 + ["g"], {"g"}) == 0.0
    assert citation_precision([], {"g"}) == 0.0 and citation_recall([], {"g"}) == 0.0
    assert citation_recall(["g"], set()) == 0.0


def test_passage_recall_in_evaluate() -> None:
    per = evaluate(
        {"q": ["a", "g1", "b", "g2"]}, {}, ["passage_recall@2", "passage_recall@4"], gold={"q": {"g1", "g2"}}
    )
    assert per == {"q": {"passage_recall@2": 0.5, "passage_recall@4": 1.0}}


def _ds() -> Dataset:
    corpus = {d: Document(id=d, text=d) for d in ("a", "b", "c", "d")}
    queries = {
        "2hop__1": Query(
            id="2hop__1",
            text="?",
            answers=["x"],
            supporting=["a", "b"],
            metadata={"hops": 2, "type": "bridge"},
        ),
        "3hop1__2": Query(
            id="3hop1__2",
            text="?",
            answers=["y"],
            supporting=["a", "b", "c"],
            metadata={"hops": 3, "type": "bridge"},
        ),
        "q3": Query(id="q3", text="?", answers=["z"], supporting=["c", "d"], metadata={"type": "comparison"}),
        "q4": Query(id="q4", text="?", answers=["w"]),
    }
    return Dataset(name="t", corpus=corpus, queries=queries)


def test_evaluate_qa_and_breakdown_by_hops_and_type() -> None:
    ds = _ds()
    ranked = {"2hop__1": ["a", "b"], "3hop1__2": ["a", "d", "b", "c"], "q3": ["c", "a"], "q4": ["a"]}
    preds = {"2hop__1": "x", "3hop1__2": "nope", "q3": "z", "q4": "w"}
    per = evaluate_qa(ds, ranked, predictions=preds, citations={"2hop__1": ["a"]}, ks=(2,))
    assert per["2hop__1"] == {
        "support_recall@2": 1.0,
        "passage_recall@2": 1.0,
        "mrr@10": 1.0,
        "em": 1.0,
        "f1": 1.0,
        "citation_precision": 1.0,
        "citation_recall": 0.5,
    }
    assert per["3hop1__2"]["passage_recall@2"] == pytest.approx(1 / 3)
    assert per["q3"]["passage_recall@2"] == 0.5 and per["q3"]["support_recall@2"] == 0.0
    assert per["q4"] == {"em": 1.0, "f1": 1.0}
    assert [hop_count(q) for q in ds.queries.values()] == [2, 3, 2, None]
    hops = breakdown_by(per, ds, "hops")
    assert list(hops) == ["2", "3"]
    assert hops["2"]["n"] == 2 and hops["2"]["em"] == 1.0 and hops["2"]["support_recall@2"] == 0.5
    assert hops["3"] == {
        "support_recall@2": 0.0,
        "passage_recall@2": pytest.approx(1 / 3),
        "mrr@10": 1.0,
        "em": 0.0,
        "f1": 0.0,
        "n": 1.0,
    }
    types = breakdown_by(per, ds, "type")
    assert {k: v["n"] for k, v in types.items()} == {"bridge": 2.0, "comparison": 1.0}
    assert types["bridge"]["em"] == 0.5
    assert list(
        breakdown({"a": {"m": 1.0}, "b": {"m": 0.0}, "c": {"m": 1.0}}, {"a": 10, "b": 9, "c": "x"})
    ) == ["9", "10", "x"]


def test_breakdown_on_shared_multihop_rag(datasets_dir: Path) -> None:
    ds = load_dataset(datasets_dir / "multihop-rag-facts-500")
    ranked = {q: list(ds.queries[q].supporting) for q in ds.queries}  # an oracle ranking
    per = evaluate_qa(
        ds, ranked, predictions={q: ds.queries[q].answers[0] for q in ds.queries if ds.queries[q].answers}
    )
    by_type = breakdown_by(per, ds, "question_type")
    assert sum(v["n"] for v in by_type.values()) == 500
    assert {"comparison_query", "inference_query", "temporal_query"} <= set(by_type)
    for v in by_type.values():
        assert v.get("em", 1.0) == 1.0
        if "support_recall@10" in v:
            assert v["passage_recall@10"] == 1.0


def test_report_breakdown_tables() -> None:
    from hoprank.evals.report import metric_breakdowns, render_breakdowns

    ds = _ds()
    per = {"2hop__1": {"em": 1.0}, "3hop1__2": {"em": 0.0}, "q3": {"em": 1.0}, "q4": {"em": 0.0}}
    b = metric_breakdowns(ds, per)
    assert set(b) == {"hops", "type"}  # no question_type in this dataset
    assert b["hops"]["2"] == {"em": 1.0, "n": 2.0}
    lines = render_breakdowns(b, ["em", "f1"])
    assert lines[:5] == ["By hops:", "", "| hops | n | em |", "|---|---:|---:|", "| 2 | 2 | 1.0000 |"]
    one_group = metric_breakdowns(ds, {"2hop__1": {"em": 1.0}})
    assert one_group == {}  # a single group is no breakdown
