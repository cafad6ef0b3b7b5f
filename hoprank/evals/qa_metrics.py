"""Per-question multi-hop QA metrics and their breakdown by hop count or question type.

For one question with gold (supporting) passage ids ``gold``, a ranked list of passage ids,
a predicted answer with the gold answers and aliases, and the passage ids the answer cites:

* ``support_recall@k``: 1.0 when *every* gold passage is in the top k, else 0.0;
* ``passage_recall@k``: the fraction of the gold passages in the top k;
* ``mrr@10``: reciprocal rank of the first gold passage within the top 10 (0.0 if none);
* ``em`` / ``f1``: SQuAD normalisation, the best over the answer and its aliases
  (:func:`~hoprank.evals.metrics.exact_match`, :func:`~hoprank.evals.metrics.f1_score`);
* ``citation_precision``: cited ids that are gold over distinct cited ids; ``citation_recall``:
  gold ids cited over gold ids. An answer that cites nothing scores 0.0 on both.

A metric is left out of a question's row when it cannot be scored: ranking metrics without
gold passages (e.g. MultiHop-RAG's ``null_query``), ``em``/``f1`` without a prediction or gold
answers, citation metrics without citations given (``None``) or without gold passages.

:func:`breakdown` groups per-question rows by a metadata value (``hops``, ``type``,
``question_type``...) and averages each group, as :func:`~hoprank.evals.metrics.mean_metrics`
does for all questions.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from hoprank.evals.dataset import Dataset, Query
from hoprank.evals.metrics import exact_match, f1_score, mean_metrics, passage_recall_at, support_recall_at

__all__ = [
    "breakdown",
    "breakdown_by",
    "citation_precision",
    "citation_recall",
    "evaluate_qa",
    "gold_mrr_at",
    "hop_count",
    "qa_question_metrics",
]

DEFAULT_KS = (2, 5, 10)


def gold_mrr_at(ranked: Sequence[str], gold: Collection[str], k: int = 10) -> float:
    """Reciprocal rank of the first gold passage within the top ``k`` (0.0 if none)."""
    for i, d in enumerate(ranked[:k]):
        if d in gold:
            return 1.0 / (i + 1)
    return 0.0


def citation_precision(cited: Sequence[str], gold: Collection[str]) -> float:
    """Distinct cited ids that are gold, over distinct cited ids (0.0 when nothing is cited)."""
    c = set(cited)
    return len(c & set(gold)) / len(c) if c else 0.0


def citation_recall(cited: Sequence[str], gold: Collection[str]) -> float:
    """Gold ids that are cited, over gold ids (0.0 with no gold)."""
    g = set(gold)
    return len(g & set(cited)) / len(g) if g else 0.0


def qa_question_metrics(
    ranked: Sequence[str] | None,
    gold: Collection[str],
    *,
    prediction: str | None = None,
    answers: Sequence[str] = (),
    cited: Sequence[str] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """One question's metrics (see the module docstring for which are left out and when)."""
    row: dict[str, float] = {}
    if ranked is not None and gold:
        ranked = list(dict.fromkeys(ranked))
        for k in ks:
            row[f"support_recall@{k}"] = support_recall_at(ranked, set(gold), k)
        for k in ks:
            row[f"passage_recall@{k}"] = passage_recall_at(ranked, set(gold), k)
        row["mrr@10"] = gold_mrr_at(ranked, set(gold), 10)
    if prediction is not None and answers:
        row["em"] = exact_match(prediction, answers)
        row["f1"] = f1_score(prediction, answers)
    if cited is not None and gold:
        row["citation_precision"] = citation_precision(cited, gold)
        row["citation_recall"] = citation_recall(cited, gold)
    return row


def evaluate_qa(
    ds: Dataset,
    ranked: Mapping[str, Sequence[str]],
    *,
    predictions: Mapping[str, str] | None = None,
    citations: Mapping[str, Sequence[str]] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, dict[str, float]]:
    """Per-question metrics over ``ds`` for the questions in ``ranked`` or ``predictions``
    (gold passages: :meth:`Dataset.gold`; gold answers: ``Query.answers``, aliases included)."""
    preds = predictions or {}
    cites = citations or {}
    qids = list(dict.fromkeys([*ranked, *preds]))
    out: dict[str, dict[str, float]] = {}
    for qid in qids:
        q = ds.queries.get(qid)
        out[qid] = qa_question_metrics(
            ranked.get(qid),
            ds.gold(qid),
            prediction=preds.get(qid),
            answers=q.answers if q is not None else (),
            cited=cites.get(qid),
            ks=ks,
        )
    return out


def hop_count(q: Query) -> int | None:
    """The question's hop count: ``metadata["hops"]`` (set by the converters: MuSiQue's id
    prefix, the number of supporting passages elsewhere), else the number of supporting
    passages, else None."""
    h = q.metadata.get("hops")
    if isinstance(h, int) and not isinstance(h, bool):
        return h
    return len(q.supporting) or None


def breakdown(
    per_query: Mapping[str, Mapping[str, float]], groups: Mapping[str, Any]
) -> dict[str, dict[str, float]]:
    """Mean metrics per group: ``{str(group): {metric: mean, ..., "n": questions}}``.

    ``groups`` maps question ids to their group value; questions without one are left out.
    Groups come in sorted order (numbers numerically)."""
    members: dict[Any, dict[str, Mapping[str, float]]] = {}
    for qid, row in per_query.items():
        g = groups.get(qid)
        if g is None:
            continue
        members.setdefault(g, {})[qid] = row

    def order(g: Any) -> tuple[int, float, str]:
        return (
            (0, float(g), "") if isinstance(g, (int, float)) and not isinstance(g, bool) else (1, 0.0, str(g))
        )

    return {
        str(g): {**mean_metrics(members[g]), "n": float(len(members[g]))} for g in sorted(members, key=order)
    }


def breakdown_by(
    per_query: Mapping[str, Mapping[str, float]], ds: Dataset, key: str
) -> dict[str, dict[str, float]]:
    """:func:`breakdown` by a query metadata key; ``key="hops"`` uses :func:`hop_count`."""
    groups: dict[str, Any] = {}
    for qid in per_query:
        q = ds.queries.get(qid)
        if q is None:
            continue
        v = hop_count(q) if key == "hops" else q.metadata.get(key)
        if isinstance(v, (list, dict)):
            v = str(v)
        groups[qid] = v
    return breakdown(per_query, groups)
