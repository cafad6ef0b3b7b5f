"""hoprank.evals: datasets, verified metrics, the resumable experiment runner, reports
and run comparison.

``from hoprank.evals import load_dataset, ExperimentConfig, run_experiment, compare``.
Nothing here imports torch; engines load lazily when a config names a model.
"""

from hoprank.evals.compare import Comparison, MetricComparison, compare, paired_tests, write_comparison
from hoprank.evals.config import ExperimentConfig
from hoprank.evals.dataset import SAMPLES, Dataset, Query, load_common, sample_path
from hoprank.evals.formats import (
    load_beir,
    load_context_qa,
    load_dataset,
    load_multihop_rag,
    load_musique,
)
from hoprank.evals.metrics import (
    average_precision,
    evaluate,
    exact_match,
    f1_score,
    mean_metrics,
    mrr_at,
    ndcg_at,
    normalize_answer,
    recall_at,
    support_recall_at,
)
from hoprank.evals.results import ResultsLog
from hoprank.evals.runner import RunOptions, RunResult, arun_experiment, run_experiment
from hoprank.llm.engines.cached import CachedEngine, default_cache_dir
from hoprank.runs import order_trec, read_qrels, read_run, write_run

__all__ = [
    "SAMPLES",
    "CachedEngine",
    "Comparison",
    "Dataset",
    "ExperimentConfig",
    "MetricComparison",
    "Query",
    "ResultsLog",
    "RunOptions",
    "RunResult",
    "arun_experiment",
    "average_precision",
    "compare",
    "default_cache_dir",
    "evaluate",
    "exact_match",
    "f1_score",
    "load_beir",
    "load_common",
    "load_context_qa",
    "load_dataset",
    "load_multihop_rag",
    "load_musique",
    "mean_metrics",
    "mrr_at",
    "ndcg_at",
    "normalize_answer",
    "order_trec",
    "paired_tests",
    "read_qrels",
    "read_run",
    "recall_at",
    "run_experiment",
    "sample_path",
    "support_recall_at",
    "write_comparison",
    "write_run",
]
