"""compare(): means, per-query deltas, scipy paired tests; the eval/compare CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hoprank.cli import app
from hoprank.errors import ConfigError
from hoprank.evals import ExperimentConfig, compare, paired_tests, run_experiment, write_comparison
from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.types import Document


class Reverse(BaseRanker):
    """The first stage upside down: a reliably worse system on BM25 runs."""

    name = "reverse"

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        return RankerOutput(list(reversed(docs)))


@pytest.fixture(scope="module")
def two_runs(datasets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cmp")
    base: dict[str, Any] = {"dataset": str(datasets_dir / "trec-dl-2019-passage"), "depth": 20}
    a = run_experiment(
        ExperimentConfig(**base, ranker="identity"), root / "bm25", cache=False, progress=False
    )
    b = run_experiment(
        ExperimentConfig(**base, ranker="reverse"),
        root / "rev",
        ranker=Reverse(),
        cache=False,
        progress=False,
    )
    return a.run_dir, b.run_dir


def test_compare_means_deltas_and_tests(two_runs: tuple[Path, Path]) -> None:
    from scipy import stats

    a, b = two_runs
    comp = compare([a, b], n_resamples=2000)
    assert comp.baseline == "identity" and [r.label for r in comp.runs] == ["identity", "reverse"]
    assert len(comp.queries) == 43 and not comp.notes
    nd = next(mc for mc in comp.metrics if mc.metric == "ndcg@10")
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    assert nd.means["identity"] == pytest.approx(0.5058, abs=5e-5)
    assert nd.means["reverse"] == pytest.approx(mb["aggregate"]["ndcg@10"])
    xs = [ma["per_query"][q]["ndcg@10"] for q in comp.queries]
    ys = [mb["per_query"][q]["ndcg@10"] for q in comp.queries]
    assert nd.delta["reverse"] == pytest.approx(sum(ys) / 43 - sum(xs) / 43)
    assert nd.wins["reverse"] + nd.losses["reverse"] + nd.ties["reverse"] == 43
    assert nd.losses["reverse"] > nd.wins["reverse"]
    assert nd.p_permutation["reverse"] is not None and nd.p_permutation["reverse"] < 0.01
    assert nd.p_wilcoxon["reverse"] == pytest.approx(stats.wilcoxon(ys, xs).pvalue)
    assert nd.p_ttest["reverse"] == pytest.approx(stats.ttest_rel(ys, xs).pvalue)
    # recall@20 over the same 20 candidates is order-free: every query ties, p = 1
    r20 = next(mc for mc in comp.metrics if mc.metric == "recall@20")
    assert (
        r20.ties["reverse"] == 43
        and r20.p_permutation["reverse"] == 1.0
        and r20.p_wilcoxon["reverse"] is None
    )
    md = comp.to_markdown()
    assert "| ndcg@10 | 43 |" in md


def test_permutation_test_is_exact_on_small_samples() -> None:
    # 5 pairs, all differences +1: the exact two-sided p over 2^5 sign flips is 2/32
    p = paired_tests([0, 0, 0, 0, 0], [1, 1, 1, 1, 1])
    assert p["permutation"] == pytest.approx(2 / 32)
    assert p["ttest"] is None and p["wilcoxon"] is not None
    assert paired_tests([1.0], [2.0]) == {"permutation": None, "wilcoxon": None, "ttest": None}


def test_different_query_sets_use_the_intersection(datasets_dir: Path, tmp_path: Path, two_runs) -> None:
    a, _ = two_runs
    sub = run_experiment(
        ExperimentConfig(
            dataset=str(datasets_dir / "trec-dl-2019-passage"), depth=20, ranker="reverse", limit=10
        ),
        tmp_path / "sub",
        ranker=Reverse(),
        cache=False,
        progress=False,
    )
    comp = compare([a, sub.run_dir], n_resamples=500)
    assert len(comp.queries) == 10 and "compared on the 10 they share" in comp.notes[0]
    with pytest.raises(ConfigError, match="different queries"):
        compare([a, sub.run_dir], strict=True)


def test_refuses_other_datasets_and_unfinished_runs(two_runs, tmp_path: Path) -> None:
    a, _ = two_runs
    other = run_experiment(ExperimentConfig(dataset="sample-dl19", depth=20), tmp_path / "s", cache=False)
    with pytest.raises(ConfigError, match="different datasets"):
        compare([a, other.run_dir])
    with pytest.raises(ConfigError, match="not a finished hoprank run"):
        compare([a, tmp_path / "nothing"])
    with pytest.raises(ConfigError, match="at least two"):
        compare([a])


def test_write_comparison_plots(two_runs, tmp_path: Path) -> None:
    comp = compare(list(two_runs), n_resamples=500)
    files = write_comparison(comp, tmp_path / "out")
    names = {f.name for f in files}
    assert {
        "comparison.json",
        "comparison.md",
        "comparison_metrics.png",
        "comparison_quality_latency.png",
    } <= names
    for f in files:
        if f.suffix == ".png":
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_eval_and_compare(tmp_path: Path) -> None:
    r = runner.invoke(
        app,
        [
            "eval",
            "--dataset",
            "sample-dl19",
            "--ranker",
            "identity",
            "--out",
            str(tmp_path / "a"),
            "--json",
            "--no-cache",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_queries"] == 3 and out["metrics"] == out["first_stage"]
    assert out["cached_queries"] == 0 and out["skipped_unjudged"] == 0
    events = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]  # progress: stderr
    assert events[0]["event"] == "started" and events[0]["total"] == 3
    assert [(e["event"], e["done"]) for e in events[1:]] == [("query", 1), ("query", 2), ("query", 3)]
    r = runner.invoke(
        app,
        [
            "eval",
            "-d",
            "sample-dl19",
            "--depth",
            "10",
            "--out",
            str(tmp_path / "b"),
            "--no-cache",
            "--metric",
            "ndcg@10",
            "--metric",
            "mrr@10",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "ndcg@10" in r.stdout and "recall@10" not in r.stdout
    r = runner.invoke(
        app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]
    )
    assert r.exit_code == 0, r.output
    assert "baseline: identity (a)" in r.stdout and (tmp_path / "c" / "comparison.md").is_file()
    r = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"])
    comp = json.loads(r.stdout)  # two runs named "identity": labels get the folder name
    assert [x["label"] for x in comp["runs"]] == ["identity (a)", "identity (b)"]


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--dataset", "/nonexistent"],
        ["eval", "--dataset", "sample-dl19", "--ranker", "nope"],
        [
            "eval",
            "--dataset",
            "sample-dl19",
            "--ranker",
            "rankgpt",
            "--model",
            "no-such-pack",
        ],  # unknown model
        ["eval", "--dataset", "sample-dl19", "--param", "novalue"],
        ["eval", "--dataset", "sample-dl19", "--metric", "bleu"],
        ["eval", "--dataset", "sample-dl19", "--executor", "spark"],
        ["eval", "--dataset", "sample-dl19", "--cache", "/tmp/x", "--no-cache"],
        ["eval", "--dataset", "sample-dl19", "--depth", "0"],
        ["compare", "/nonexistent-a", "/nonexistent-b"],
    ],
)
def test_cli_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    r = runner.invoke(app, [*args, *(["--out", str(tmp_path / "o")] if args[0] == "eval" else [])])
    assert r.exit_code == 2, r.output


def test_cli_runtime_failure_exits_1(tmp_path: Path) -> None:
    # an OpenAI engine pointed at a closed local port: the engine fails at run time
    r = runner.invoke(
        app,
        ["eval", "-d", "sample-dl19", "-r", "rankgpt", "-m", "x", "--base-url", "http://127.0.0.1:9/v1",
         "--engine-param", "timeout=2", "--limit", "1", "--depth", "3", "--no-cache", "--out", str(tmp_path / "o")],
    )  # fmt: skip
    assert r.exit_code == 1, r.output
