"""Ranking and answer metrics with trec_eval semantics (tested against ``pytrec_eval``).

Conventions (the ones ``trec_eval``/``pytrec_eval`` use):

* A ranked list is taken as given (best first). To score a TREC run by its scores, order
  it with :func:`hoprank.runs.order_trec` (score desc, ties by docid desc).
* ``ndcg@k`` uses the graded labels as linear gains (``rel``, not ``2**rel - 1``), the
  ``log2(rank + 1)`` discount, and the ideal ordering of every judged document with
  ``rel > 0`` (judged documents outside the ranked list still count in the ideal).
* Binary metrics (``mrr@k``, ``recall@k``, ``map``) count a document relevant when
  ``rel >= relevance_level``; the level defaults to 1, and to 2 for TREC DL (the track's
  convention for passages). ``recall@k`` divides by all relevant judged documents.
* ``support_recall@k`` is 1 when *every* gold paragraph (``Query.supporting``, or the
  relevant qrels when a query has none) is in the top k, else 0 (multi-hop QA);
  ``passage_recall@k`` is the fraction of those gold paragraphs in the top k.
* ``em``/``f1``: SQuAD answer normalisation (lowercase, drop punctuation and the articles
  a/an/the, collapse whitespace); the best score over the gold answers.
* A query enters a ranking metric's mean only when it has judgments (trec_eval ignores
  queries without qrels); ``support_recall`` needs gold ids, ``em``/``f1`` gold answers
  and a predicted answer.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from hoprank.errors import ConfigError
from hoprank.runs import ndcg_at

__all__ = [
    "DEFAULT_METRICS",
    "QA_METRICS",
    "MetricSpec",
    "average_precision",
    "canonical_metrics",
    "evaluate",
    "exact_match",
    "f1_score",
    "mean_metrics",
    "mrr_at",
    "ndcg_at",
    "normalize_answer",
    "parse_metric",
    "passage_recall_at",
    "recall_at",
    "support_recall_at",
]

DEFAULT_METRICS = ("ndcg@1", "ndcg@5", "ndcg@10", "mrr@10", "recall@10", "recall@20", "map")
QA_METRICS = ("support_recall@2", "support_recall@5")
T = TypeVar("T")
_KINDS = ("ndcg", "mrr", "recall", "map", "support_recall", "passage_recall", "em", "f1")
_NO_CUT = ("map", "em", "f1")


@dataclass(frozen=True)
class MetricSpec:
    """A parsed metric name: ``kind`` and cutoff ``k`` (None = the whole list)."""

    kind: str
    k: int | None

    @property
    def name(self) -> str:
        return self.kind if self.k is None else f"{self.kind}@{self.k}"


def parse_metric(name: str) -> MetricSpec:
    """Parse ``ndcg@10``, ``mrr@10``, ``recall@100``, ``map``, ``support_recall@5``, ``em``, ``f1``."""
    kind, _, cut = name.strip().lower().partition("@")
    if kind not in _KINDS:
        raise ConfigError(f"unknown metric {name!r}; known kinds: {', '.join(_KINDS)} (e.g. ndcg@10)")
    if not cut:
        return MetricSpec(kind, None)
    if kind in _NO_CUT:
        raise ConfigError(f"metric {kind!r} takes no cutoff (got {name!r})")
    if not cut.isdigit() or int(cut) < 1:
        raise ConfigError(f"metric {name!r}: the cutoff must be a positive integer")
    return MetricSpec(kind, int(cut))


def canonical_metrics(names: Sequence[str]) -> list[str]:
    """Canonical, de-duplicated metric names in their given order (``parse_metric``)."""
    return list(dict.fromkeys(parse_metric(m).name for m in names))


def _cut(ranked: Sequence[T], k: int | None) -> Sequence[T]:
    return ranked if k is None else ranked[:k]


def mrr_at(ranked: Sequence[str], qrels: Mapping[str, int], k: int | None = None, *, level: int = 1) -> float:
    """Reciprocal rank of the first relevant document within the top ``k`` (0 if none)."""
    for i, d in enumerate(_cut(ranked, k)):
        if qrels.get(d, 0) >= level:
            return 1.0 / (i + 1)
    return 0.0


def recall_at(
    ranked: Sequence[str], qrels: Mapping[str, int], k: int | None = None, *, level: int = 1
) -> float:
    """Relevant documents in the top ``k`` over all relevant judged documents."""
    n_rel = sum(1 for g in qrels.values() if g >= level)
    if n_rel == 0:
        return 0.0
    return sum(1 for d in _cut(ranked, k) if qrels.get(d, 0) >= level) / n_rel


def average_precision(ranked: Sequence[str], qrels: Mapping[str, int], *, level: int = 1) -> float:
    """trec_eval's ``map`` for one query (denominator: all relevant judged documents)."""
    n_rel = sum(1 for g in qrels.values() if g >= level)
    if n_rel == 0:
        return 0.0
    hits = 0
    total = 0.0
    for i, d in enumerate(ranked):
        if qrels.get(d, 0) >= level:
            hits += 1
            total += hits / (i + 1)
    return total / n_rel


def support_recall_at(ranked: Sequence[str], gold: set[str] | Sequence[str], k: int) -> float:
    """1.0 when every gold document is within the top ``k``, else 0.0."""
    top = set(ranked[:k])
    return 1.0 if all(g in top for g in gold) else 0.0


def passage_recall_at(ranked: Sequence[str], gold: set[str] | Sequence[str], k: int) -> float:
    """The fraction of the gold documents within the top ``k`` (0.0 with no gold)."""
    gold_set = set(gold)
    if not gold_set:
        return 0.0
    return len(gold_set & set(ranked[:k])) / len(gold_set)


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, remove punctuation, articles and extra whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer."""
    p = normalize_answer(prediction)
    return 1.0 if any(p == normalize_answer(g) for g in golds) else 0.0


_YES_NO = frozenset({"yes", "no", "noanswer"})


def _f1(prediction: str, gold: str) -> float:
    p_norm, g_norm = normalize_answer(prediction), normalize_answer(gold)
    # HotpotQA's official rule: a yes/no/noanswer prediction or gold scores only when
    # the two are equal ("Yes, both are American" against "yes" is 0, not 0.33).
    if (p_norm in _YES_NO or g_norm in _YES_NO) and p_norm != g_norm:
        return 0.0
    common = Counter(p_norm.split()) & Counter(g_norm.split())
    same = sum(common.values())
    if same == 0:  # also two empty strings, as in the HotpotQA and SQuAD v1.1 scripts
        return 0.0
    precision, recall = same / len(p_norm.split()), same / len(g_norm.split())
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Token-level F1 after normalisation, the best over the gold answers, as HotpotQA's
    official script computes it (2WikiMultiHopQA uses the same): yes/no/noanswer answers
    score only on an exact match, and empty strings score 0."""
    return max((_f1(prediction, g) for g in golds), default=0.0)


def evaluate(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    relevance_level: int = 1,
    gold: Mapping[str, set[str]] | None = None,
    answers: Mapping[str, str] | None = None,
    gold_answers: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict[str, float]]:
    """Per-query metric values: ``{qid: {metric_name: value}}``.

    ``run`` maps qids to ranked doc ids (best first). ``gold`` gives the gold set for
    ``support_recall`` (defaults to qrels with ``rel >= relevance_level``); ``answers``
    and ``gold_answers`` feed ``em``/``f1``. A query gets only the metrics it can be scored on.
    Metric names are canonical in the output (``" NDCG@10"`` is ``ndcg@10``); a document
    listed twice in a ranked list counts once, at its first rank (a TREC run cannot hold
    it twice).
    """
    specs = [parse_metric(m) for m in canonical_metrics(metrics)]
    out: dict[str, dict[str, float]] = {}
    for qid, listed in run.items():
        ranked = list(dict.fromkeys(listed))
        row: dict[str, float] = {}
        q = qrels.get(qid)
        g = (gold or {}).get(qid) or {d for d, r in (q or {}).items() if r >= relevance_level}
        for s in specs:
            if s.kind in ("ndcg", "mrr", "recall", "map"):
                if not q:
                    continue
                if s.kind == "ndcg":
                    row[s.name] = ndcg_at(ranked, q, s.k)
                elif s.kind == "mrr":
                    row[s.name] = mrr_at(ranked, q, s.k, level=relevance_level)
                elif s.kind == "recall":
                    row[s.name] = recall_at(ranked, q, s.k, level=relevance_level)
                else:
                    row[s.name] = average_precision(ranked, q, level=relevance_level)
            elif s.kind in ("support_recall", "passage_recall"):
                if g:
                    fn = support_recall_at if s.kind == "support_recall" else passage_recall_at
                    row[s.name] = fn(ranked, g, s.k or len(ranked))
            else:
                pred = (answers or {}).get(qid)
                golds = (gold_answers or {}).get(qid)
                if pred is not None and golds:
                    row[s.name] = exact_match(pred, golds) if s.kind == "em" else f1_score(pred, golds)
        out[qid] = row
    return out


def mean_metrics(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over the queries that have it (plus ``<metric>.n`` counts omitted)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row in per_query.values():
        for m, v in row.items():
            sums[m] = sums.get(m, 0.0) + v
            counts[m] = counts.get(m, 0) + 1
    return {m: sums[m] / counts[m] for m in sums}
