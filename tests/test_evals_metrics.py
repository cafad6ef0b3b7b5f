"""Metrics against pytrec_eval / ir_measures on real runs, and the SQuAD answer metrics."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from hoprank.errors import ConfigError
from hoprank.evals import (
    evaluate,
    exact_match,
    f1_score,
    load_dataset,
    mean_metrics,
    normalize_answer,
    order_trec,
    support_recall_at,
)
from hoprank.evals.metrics import parse_metric

pytrec_eval = pytest.importorskip("pytrec_eval")

_TREC = {"ndcg@5": "ndcg_cut_5", "ndcg@10": "ndcg_cut_10", "ndcg@20": "ndcg_cut_20", "recall@10": "recall_10",
         "recall@100": "recall_100", "map": "map", "mrr": "recip_rank", "ndcg": "ndcg"}  # fmt: skip


def _pytrec(qrels, run_scores, level):
    measures = {"ndcg_cut.5,10,20", "recall.10,100", "map", "recip_rank", "ndcg"}
    return pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=level).evaluate(run_scores)


@pytest.fixture(scope="module")
def dl19(datasets_dir: Path):
    return load_dataset(datasets_dir / "trec-dl-2019-passage")


def test_bm25_dl19_ndcg10_is_05058(dl19) -> None:
    ranked = {q: [d for d, _ in hits] for q, hits in dl19.run("bm25").items()}
    per_query = evaluate(ranked, dl19.qrels, ["ndcg@10"], relevance_level=dl19.relevance_level)
    assert len(per_query) == 43
    assert round(mean_metrics(per_query)["ndcg@10"], 4) == 0.5058


@pytest.mark.parametrize("level", [1, 2])
def test_every_query_matches_pytrec_eval_on_dl19(dl19, level: int) -> None:
    run = dl19.run("bm25")
    ours = evaluate(
        {q: [d for d, _ in h] for q, h in run.items()}, dl19.qrels, list(_TREC), relevance_level=level
    )
    ref = _pytrec(dl19.qrels, {q: dict(h) for q, h in run.items()}, level)
    assert set(ours) == set(ref)
    for q in ref:
        for ours_name, trec_name in _TREC.items():
            assert ours[q][ours_name] == pytest.approx(ref[q][trec_name], abs=1e-12), (q, ours_name)


def test_matches_pytrec_eval_on_shuffled_runs_with_ties(dl19) -> None:
    """Reranked-like lists with tied scores: our trec ordering + metrics equal pytrec_eval's."""
    rng = random.Random(7)
    run = {}
    for q, hits in list(dl19.run("bm25").items())[:15]:
        # coarse scores create many ties, broken by docid (descending) in trec_eval
        run[q] = {d: float(rng.randint(0, 5)) for d, _ in hits[:50]}
    ranked = {q: [d for d, _ in order_trec(s)] for q, s in run.items()}
    ours = evaluate(ranked, dl19.qrels, list(_TREC), relevance_level=2)
    ref = _pytrec(dl19.qrels, run, 2)
    for q in ref:
        for ours_name, trec_name in _TREC.items():
            assert ours[q][ours_name] == pytest.approx(ref[q][trec_name], abs=1e-12), (q, ours_name)


def test_mrr_at_10_matches_ir_measures(dl19) -> None:
    ir_measures = pytest.importorskip("ir_measures")
    run = dl19.run("bm25")
    ours = evaluate({q: [d for d, _ in h] for q, h in run.items()}, dl19.qrels, ["mrr@10"], relevance_level=2)
    measure = ir_measures.parse_measure("RR(rel=2)@10")
    ref = {
        m.query_id: m.value
        for m in ir_measures.iter_calc([measure], dl19.qrels, {q: dict(h) for q, h in run.items()})
    }
    for q, v in ref.items():
        assert ours[q]["mrr@10"] == pytest.approx(v, abs=1e-12)
    assert statistics.fmean(ref.values()) > 0.6


def test_hotpotqa_distractor_baseline_and_support_recall(datasets_dir: Path) -> None:
    ds = load_dataset(datasets_dir / "hotpotqa-dev-distractor-500")
    ranked = {q: [d for d, _ in h] for q, h in ds.run("distractor").items()}
    gold = {q: ds.gold(q) for q in ranked}
    pq = evaluate(ranked, ds.qrels, ["ndcg@10", "support_recall@10", "support_recall@2"], gold=gold)
    agg = mean_metrics(pq)
    assert round(agg["ndcg@10"], 4) == 0.5670  # the PROVENANCE's context-order baseline
    assert agg["support_recall@10"] == 1.0  # every question's candidates include both gold paragraphs
    # support_recall@2 = both gold paragraphs are the first two: compute it independently
    direct = statistics.fmean(float(set(ranked[q][:2]) == gold[q]) for q in ranked)
    assert agg["support_recall@2"] == pytest.approx(direct)


def test_support_recall_needs_every_gold_doc() -> None:
    assert support_recall_at(["a", "b", "c"], {"a", "c"}, 3) == 1.0
    assert support_recall_at(["a", "b", "c"], {"a", "c"}, 2) == 0.0


def test_unjudged_queries_are_left_out_of_ranking_metrics() -> None:
    pq = evaluate({"q1": ["a", "b"], "q2": ["c"]}, {"q1": {"b": 1}}, ["ndcg@10", "mrr@10"])
    assert pq["q2"] == {}
    assert mean_metrics(pq) == {"ndcg@10": pytest.approx(1 / 1.5849625007211563), "mrr@10": 0.5}


@pytest.mark.parametrize(
    ("pred", "golds", "em", "f1"),
    [
        ("Chief of Protocol", ["Chief of Protocol"], 1.0, 1.0),
        ("the Chief of Protocol.", ["Chief of Protocol"], 1.0, 1.0),  # article + punctuation
        ("  chief   of PROTOCOL ", ["Chief of Protocol"], 1.0, 1.0),  # case + whitespace
        ("Animorphs series", ["Animorphs"], 0.0, 2 * (0.5 * 1.0) / 1.5),  # P=1/2, R=1
        ("Greenwich Village", ["Greenwich Village, New York City"], 0.0, 2 * (1.0 * 0.4) / 1.4),  # P=1, R=2/5
        ("YG", ["YG Entertainment", "YG"], 1.0, 1.0),  # best over gold answers
        ("a", ["the"], 1.0, 0.0),  # both normalise to "": EM 1, F1 0 (HotpotQA / SQuAD v1.1 scripts)
        ("Yes, they are both American", ["yes"], 0.0, 0.0),  # HotpotQA: yes/no only by exact match
        ("yes.", ["Yes"], 1.0, 1.0),
        ("no", ["no way out"], 0.0, 0.0),  # a yes/no prediction against another gold
        ("noanswer", ["noanswer"], 1.0, 1.0),
        ("Paris", ["London"], 0.0, 0.0),
    ],
)
def test_em_f1(pred: str, golds: list[str], em: float, f1: float) -> None:
    assert exact_match(pred, golds) == em
    assert f1_score(pred, golds) == pytest.approx(f1)


def test_normalize_answer() -> None:
    assert normalize_answer("The  Beatles, an English band!") == "beatles english band"
    assert normalize_answer("Theatre") == "theatre"  # 'the' only as a whole word


def test_em_f1_enter_evaluate_only_with_answers() -> None:
    pq = evaluate(
        {"q": ["a"], "r": ["b"]},
        {},
        ["em", "f1"],
        answers={"q": "Paris"},
        gold_answers={"q": ["paris"], "r": ["x"]},
    )
    assert pq == {"q": {"em": 1.0, "f1": 1.0}, "r": {}}


@pytest.mark.parametrize("bad", ["ndcg@0", "ndcg@x", "map@10", "bleu", "em@3"])
def test_bad_metric_names(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_metric(bad)


def test_metric_names_canonical_and_duplicates_counted_once() -> None:
    """' NDCG@10' and 'ndcg@10' are one metric; a document listed twice counts once."""
    from hoprank.evals import ExperimentConfig
    from hoprank.evals.metrics import canonical_metrics

    qrels = {"q": {"a": 1, "b": 1}}
    rows = evaluate({"q": ["a", "a", "b"]}, qrels, [" NDCG@10", "ndcg@10", "Recall@2", "MRR@1"])
    assert list(rows["q"]) == ["ndcg@10", "recall@2", "mrr@1"]
    assert rows["q"]["recall@2"] == 1.0  # 'a' twice does not push 'b' out of the top 2
    assert rows["q"]["ndcg@10"] == pytest.approx(1.0)
    assert canonical_metrics(["EM", "em", " F1"]) == ["em", "f1"]
    cfg = ExperimentConfig(dataset="sample-dl19", metrics=["NDCG@10", "ndcg@10 "])
    assert cfg.metrics == ["ndcg@10"]
