"""The benchmark scripts' shared engine choice and the agents benchmark's resumable output.

Real data (HotpotQA dev 500, DL19 BM25 top-k) and, for the llama.cpp path, the real
SmolLM2 GGUF served by llama.cpp on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HOPRANK_SHARED", ROOT.parent / "shared"))


def _script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOPRANK_SHARED": str(SHARED), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def _jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _agents_module() -> Any:
    """benchmarks/agents_hotpotqa.py imported in-process (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(
        "agents_hotpotqa", ROOT / "benchmarks" / "agents_hotpotqa.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_agents_benchmark_writes_run_folders_and_resumes(tmp_path: Path) -> None:
    """The script is a thin caller of the QA runner: one resumable run folder per system,
    the table titled by the dataset."""
    out = tmp_path / "agents"
    args = ("agents_hotpotqa.py", "--systems", "a", "--data", str(SHARED / "datasets"), "--out", str(out))
    first = _script(*args, "--limit", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    rows = _jsonl(out / "a" / "results.jsonl")
    assert len(rows) == 2
    with (out / "a" / "results.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"qid": ')  # a kill mid-write: the torn line is dropped
    again = _script(*args, "--limit", "3")  # a larger limit extends the run
    assert again.returncode == 0, again.stderr[-2000:]
    rows2 = _jsonl(out / "a" / "results.jsonl")
    assert len(rows2) == 3 and rows2[:2] == rows
    table = (tmp_path / "agents.md").read_text(encoding="utf-8")
    assert table.startswith("hotpotqa-dev-distractor-500, bm25 over 4,858 passages, first 3 questions")
    assert "| a (bm25@20) | 3 |" in table
    assert json.loads((out / "a" / "manifest.json").read_text())["attempts"][-1]["resumed"] == 2


def test_agents_benchmark_options_are_overrides_of_the_presets() -> None:
    import argparse

    mod = _agents_module()
    blank = argparse.Namespace(
        depth=None, rrf_k=None, original_weight=None, agent_steps=None, agent_k=None, no_answer=False,
        no_bridge=False, ranker=None, ranker_param=[], param=[],
    )  # fmt: skip
    assert mod.overrides(blank, ["a", "b", "c0", "c", "d"]) == {}  # the presets stand
    tuned = argparse.Namespace(**{**vars(blank), "depth": 5, "ranker": "icr", "ranker_param": ["window=10"]})
    assert mod.overrides(tuned, ["a", "c"]) == {
        "pipeline.k": 10, "pipeline.pool_depth": 5, "c.ranker": "icr", "c.ranker_params": {"window": 10},
    }  # fmt: skip


@pytest.mark.slow
def test_rerank_benchmark_over_a_llamacpp_server_it_starts(tmp_path: Path) -> None:
    pytest.importorskip("xllamacpp")
    out = tmp_path / "rows.jsonl"
    res = _script(
        "rerank_dl19.py", "--engine", "llamacpp", "--model", "smollm2-135m", "--rankers", "first",
        "--depth", "5", "--limit", "1", "--threads", "1", "--n-ctx", "4096", "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (row,) = _jsonl(out)
    assert row["llm_calls"] == 1 and row["fallbacks"] == 0
    assert len(row["ranked"]) == 5 and len(set(row["ranked"])) == 5  # type: ignore[arg-type]
    assert '"server": "llamacpp"' in res.stdout


def test_agents_table_charges_c_for_the_decomposition_it_shares_with_c0() -> None:
    import argparse

    _agents_module()  # puts the repository root on sys.path
    from benchmarks._agents_records import records_table

    base = {"R@2": 1.0, "R@5": 1.0, "R@10": 1.0, "MRR@10": 1.0, "tokens": 10, "decompose_fallback": False}
    records = [
        {**base, "system": "c0", "qid": "q1", "seconds": 20.0, "sub_questions": ["x", "y"]},
        {**base, "system": "c", "qid": "q1", "seconds": 10.0, "sub_questions": ["x", "y"]},
        {**base, "system": "c0", "qid": "q2", "seconds": 30.0, "sub_questions": ["x"]},
        {**base, "system": "c", "qid": "q2", "seconds": 6.0, "sub_questions": ["x"]},
    ]
    args = argparse.Namespace(
        no_bridge=False, depth=20, agent_steps=4, agent_k=5, rrf_k=10, original_weight=1.0, ranker="first"
    )
    table = records_table(records, args)
    assert "| (c) decompose + bridge + BM25 + RRF + FIRST | 2 |" in table
    assert "(c) from scratch costs (c0) + (c) = 33.0 s/q" in table
    args.ranker = "icr"
    assert "| (c) decompose + bridge + BM25 + RRF + ICR | 2 |" in records_table(records, args)


def test_agents_report_rescores_saved_answers_with_the_current_metrics() -> None:
    _agents_module()  # puts the repository root on sys.path
    from benchmarks._agents_records import rescore

    records = [
        {"qid": "q1", "answer": "Yes, both are", "EM": 0.0, "F1": 0.5},  # stale: before the yes/no rule
        {"qid": "q1", "agent_answer": None, "agent_EM": 1.0, "agent_F1": 1.0},
        {"qid": "q2", "answer": "x", "EM": 0.0, "F1": 0.0},  # no gold: left alone
        {"qid": "q1"},  # no answers at all (system a)
    ]
    assert rescore(records, {"q1": ["yes"]}) == 3
    assert records[0]["F1"] == 0.0 and records[1]["agent_EM"] == 0.0 and records[1]["agent_F1"] == 0.0
    assert records[2]["F1"] == 0.0 and records[3] == {"qid": "q1"}
    assert rescore(records, {"q1": ["yes"]}) == 0


def test_agents_report_merges_record_files_and_refuses_a_pair_twice(tmp_path: Path) -> None:
    base = {"R@2": 0.0, "R@5": 1.0, "R@10": 1.0, "MRR@10": 0.5, "seconds": 2.0, "tokens": 10}
    one, two = tmp_path / "abc.jsonl", tmp_path / "d.jsonl"
    one.write_text(
        "".join(
            json.dumps({**base, "system": s, "qid": q, **({"ranker": "icr"} if s == "b" else {})}) + "\n"
            for q in ("q1", "q2")
            for s in ("a", "b")
        )
        + '{"system": "a", "qid"',  # a torn tail is skipped
        encoding="utf-8",
    )
    two.write_text(json.dumps({**base, "system": "a", "qid": "q3", "R@5": 0.0}) + "\n", encoding="utf-8")
    res = _script("agents_hotpotqa.py", "--report", str(one), str(two), "--out", str(tmp_path / "t"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 questions" in res.stdout
    assert "| (a) BM25 | 3 | 0.000 | 0.667 |" in res.stdout
    assert "| (b) BM25 + ICR top-20 | 2 |" in res.stdout
    assert (tmp_path / "t.md").read_text(encoding="utf-8").strip() == res.stdout.strip()
    common = _script("agents_hotpotqa.py", "--report", str(one), str(two), "--common")
    assert common.returncode == 0, common.stderr[-2000:]
    assert "2 questions, only those every system (a, b) answered" in common.stdout
    assert "| (a) BM25 | 2 | 0.000 | 1.000 |" in common.stdout  # q3 (only a ran it) left out
    dup = _script("agents_hotpotqa.py", "--report", str(one), str(one))
    assert dup.returncode != 0
    assert "system a of question q1 is also in" in dup.stderr


@pytest.mark.slow
def test_random_weight_model_runs_the_speed_scripts(tmp_path: Path) -> None:
    """The GPU speed path end to end on a CPU: a random-weight Qwen2.5-shaped folder (2
    layers) with the real tokenizer, timed by perf_rankers and profiled by profile_ranker."""
    from hoprank.llm.models.packs import resolve

    tok_dir = resolve("qwen2.5-coder-0.5b").path
    folder = tmp_path / "tiny"
    made = _script(
        "random_model.py", "--shape", "qwen2.5-tiny", "--tokenizer", str(tok_dir), "--out", str(folder)
    )
    assert made.returncode == 0, made.stderr[-2000:]
    info = json.loads(made.stdout.strip().splitlines()[-1])
    assert info["random_weights"] is True and info["params"] > 0
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 2
    out = tmp_path / "perf.json"
    perf = _script(
        "perf_rankers.py", "--model", str(folder), "--queries", "1", "--batch-sizes", "1,2", "--repeats", "1",
        "--depth", "5", "--window", "5", "--threads", "1", "--sdpa-backends", "math", "--length-buckets", "pow2", "-q", "--json", str(out),
    )  # fmt: skip
    assert perf.returncode == 0, perf.stderr[-2000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary["engine"]["sdpa_backends"] == ["MATH"]
    assert summary["engine"]["length_buckets"] == "pow2"
    assert summary["ratio"]["rankgpt_over_first"] > 0 and summary["windows_per_query"]["first"] == 1
    assert "(1) RankGPT / FIRST per query" in perf.stdout
    prof = _script(
        "profile_ranker.py", "--model", str(folder), "--ranker", "first", "--queries", "1", "--depth", "5",
        "--threads", "1", "--rows", "5",
    )  # fmt: skip
    assert prof.returncode == 0, prof.stderr[-2000:]
    assert "first:" in prof.stdout and "s/query" in prof.stdout and "Self CPU" in prof.stdout


def test_agent_seconds_runs_both_settings_on_a_real_model(tmp_path: Path) -> None:
    """benchmarks/agent_seconds.py on SmolLM2-135M, one shipped HotpotQA question, the c0
    pipeline (decompose, bridge, answer): both settings run, the cache serves prompt tokens
    and the outputs match."""
    out = tmp_path / "seconds.json"
    res = _script(
        "agent_seconds.py", "--data", "sample-hotpotqa", "--system", "c0", "--model", "smollm2-135m",
        "--limit", "1", "--threads", "1", "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["questions"] == 1 and data["same_answer"] == 1 and data["same_ranked"] == 1
    on, off = data["costs"]["on"]["steps"], data["costs"]["off"]["steps"]
    assert set(on) == set(off) and "decompose" in on and "final answer.short" in on
    assert sum(r["cached_tokens"] for r in off.values()) == 0
    assert sum(r["cached_tokens"] for r in on.values()) > 0 and data["cache"]["hits"] >= 1
    assert "Where the seconds go" in res.stdout
