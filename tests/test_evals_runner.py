"""The experiment runner: outputs, resume after SIGKILL, cache, failures, Ray = local."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hoprank.errors import ConfigError, EngineError
from hoprank.evals import ExperimentConfig, RunOptions, run_experiment
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.types import Document

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ByLength(BaseRanker):
    """Deterministic non-trivial order: shortest passage first (ties by id); optional delay."""

    name = "by-length"

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_on is not None and query == self.fail_on:
            raise EngineError("scripted failure")
        return RankerOutput(sorted(docs, key=lambda d: (len(d.text), d.id)))


def _dl19(datasets_dir: Path, **kw: Any) -> ExperimentConfig:
    base: dict[str, Any] = {
        "dataset": str(datasets_dir / "trec-dl-2019-passage"),
        "ranker": "by-length",
        "depth": 30,
    }
    return ExperimentConfig(**{**base, **kw})


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_run_folder_outputs(datasets_dir: Path, tmp_path: Path) -> None:
    cfg = _dl19(datasets_dir, limit=8, name="len")
    res = run_experiment(cfg, tmp_path / "run", ranker=ByLength(), cache=False, progress=False)
    d = res.run_dir
    for f in ("manifest.json", "results.jsonl", "run.trec", "traces.jsonl", "metrics.json", "report.md"):
        assert (d / f).is_file(), f
    for png in ("metrics.png", "quality_latency.png"):
        data = (d / png).read_bytes()
        assert data[:8] == PNG_MAGIC
        import matplotlib.image

        assert matplotlib.image.imread(str(d / png)).shape[2] in (3, 4)
    m = json.loads((d / "metrics.json").read_text())
    assert m["n_queries"] == 8 and len(m["per_query"]) == 8
    assert round(m["first_stage"]["ndcg@10"], 6) != round(m["aggregate"]["ndcg@10"], 6)
    trec = (d / "run.trec").read_text().splitlines()
    assert len(trec) == 8 * 30 and trec[0].split()[1:] and trec[0].split()[5] == "len"
    # run.trec scored by pytrec_eval gives the runner's own nDCG@10
    pytrec_eval = pytest.importorskip("pytrec_eval")
    from hoprank.evals import load_dataset, read_run

    ds = load_dataset(cfg.dataset)
    run = {q: dict(h) for q, h in read_run(d / "run.trec").items()}
    ref = pytrec_eval.RelevanceEvaluator(ds.qrels, {"ndcg_cut.10"}).evaluate(run)
    assert sum(v["ndcg_cut_10"] for v in ref.values()) / 8 == pytest.approx(m["aggregate"]["ndcg@10"])
    man = json.loads((d / "manifest.json").read_text())
    assert man["status"] == "complete" and man["fingerprint"] == cfg.fingerprint
    assert man["dataset"]["hash"] == ds.content_hash and man["environment"]["python"]
    assert man["attempts"][0]["pending"] == 8 and man["queries"]["n"] == 8
    report = (d / "report.md").read_text()
    assert "| ndcg@10 |" in report and "![metrics.png](metrics.png)" in report


def test_refuses_a_folder_of_another_experiment(datasets_dir: Path, tmp_path: Path) -> None:
    run_experiment(_dl19(datasets_dir, limit=2), tmp_path, ranker=ByLength(), cache=False, progress=False)
    with pytest.raises(ConfigError, match="different experiment"):
        run_experiment(_dl19(datasets_dir, limit=2, depth=10), tmp_path, ranker=ByLength(), cache=False)
    res = run_experiment(
        _dl19(datasets_dir, limit=2, depth=10), tmp_path, ranker=ByLength(), cache=False, overwrite=True
    )
    assert res.executed == 2 and res.resumed == 0
    # same experiment, other concurrency: resumes (nothing to do); the options as one object
    options = RunOptions(ranker=ByLength(), cache=False, progress=False, overwrite=True)
    res = run_experiment(
        _dl19(datasets_dir, limit=2, depth=10, concurrency=3), tmp_path, options, overwrite=False
    )
    assert res.executed == 0 and res.resumed == 2
    with pytest.raises(TypeError, match="no_such_option"):
        run_experiment(_dl19(datasets_dir, limit=2), tmp_path, no_such_option=1)


def test_failure_keeps_finished_queries_and_resumes(datasets_dir: Path, tmp_path: Path) -> None:
    cfg = _dl19(datasets_dir, limit=6)
    from hoprank.evals import load_dataset

    ds = load_dataset(cfg.dataset)
    fourth = list(ds.queries.values())[3].text
    with pytest.raises(EngineError, match="scripted failure"):
        run_experiment(cfg, tmp_path, ranker=ByLength(fail_on=fourth), cache=False, progress=False)
    assert len(_lines(tmp_path / "results.jsonl")) == 3
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "failed"
    res = run_experiment(cfg, tmp_path, ranker=ByLength(), cache=False, progress=False)
    assert (res.resumed, res.executed) == (3, 3)
    assert len({r["qid"] for r in _lines(tmp_path / "results.jsonl")}) == 6


_CHILD = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from test_evals_runner import ByLength, _dl19
from pathlib import Path
from hoprank.evals import run_experiment
cfg = _dl19(Path({datasets!r}), concurrency=2)
run_experiment(cfg, {out!r}, ranker=ByLength(delay=0.15), cache=False, progress=False)
"""


def test_resume_after_sigkill(datasets_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    script = _CHILD.format(tests=str(Path(__file__).parent), datasets=str(datasets_dir), out=str(out))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if results.exists() and results.read_text().count("\n") >= 10:
            break
        if proc.poll() is not None:
            pytest.fail(f"child exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = len(_lines(results))
    assert 10 <= done_before < 43, done_before
    assert not (out / "metrics.json").exists()
    # a kill in the middle of a write leaves a torn last line: simulate one on top
    with open(results, "a") as f:
        f.write('{"qid": "1133167", "ranked": [["123", nu')
    res = run_experiment(_dl19(datasets_dir), out, ranker=ByLength(), cache=False, progress=False)
    assert res.resumed == done_before and res.executed == 43 - done_before
    lines = _lines(results)  # also proves the torn line was removed (json.loads of every line)
    assert len(lines) == 43 and len({r["qid"] for r in lines}) == 43
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["attempts"]) == 2 and man["status"] == "complete"
    # identical metrics to an uninterrupted run
    ref = run_experiment(
        _dl19(datasets_dir), tmp_path / "ref", ranker=ByLength(), cache=False, progress=False
    )
    assert res.per_query == ref.per_query and res.metrics == ref.metrics
    assert (out / "run.trec").read_text() == (tmp_path / "ref" / "run.trec").read_text()


def test_sigterm_ends_a_cli_run_like_ctrl_c(datasets_dir: Path, tmp_path: Path) -> None:
    """The command line turns SIGTERM into Ctrl-C: the manifest records the failed attempt
    (not a run left 'running'), and the finished queries stay for a resume."""
    out = tmp_path / "terminated"
    script = "from hoprank.cli import _terminate_as_interrupt\n_terminate_as_interrupt()\n" + _CHILD.format(
        tests=str(Path(__file__).parent), datasets=str(datasets_dir), out=str(out)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (results.exists() and results.read_text().count("\n") >= 5):
        if proc.poll() is not None:
            pytest.fail(f"child exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "failed" and man["attempts"][-1]["error"].startswith("interrupted (")
    assert "finished_at" in man["attempts"][-1]
    assert 5 <= len(_lines(results)) < 43


def _rankgpt_script(messages: Any) -> str:
    return "[2] > [1] > [3]"


def test_cache_makes_a_rerun_free(tmp_path: Path) -> None:
    """RankGPT on a scripted engine: a second run into a new folder makes no engine calls."""
    cfg = ExperimentConfig(
        dataset="sample-dl19", ranker="rankgpt", depth=6, ranker_params={"window": 3, "step": 2}
    )

    def run(out: str) -> tuple[ScriptedEngine, Any]:
        eng = ScriptedEngine(_rankgpt_script)
        res = run_experiment(cfg, tmp_path / out, engine=eng, cache=tmp_path / "cache", progress=False)
        return eng, res

    e1, r1 = run("a")
    assert len(e1.calls) > 0
    e2, r2 = run("b")
    assert e2.calls == [] and r2.metrics == r1.metrics
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["cache"]["misses"] == 0 and man["cache"]["hits"] == len(e1.calls)
    assert man["engine"] == {"engine": "scripted", "name": "scripted"}
    assert man["prompt"]["ref"].startswith("rankgpt@")
    assert (tmp_path / "a" / "run.trec").read_text() == (tmp_path / "b" / "run.trec").read_text()


@pytest.mark.slow
def test_real_model_run_on_the_shipped_sample(tmp_path: Path, smollm2_engine: Any) -> None:
    """SmolLM2 pointwise over the shipped DL19 sample (plumbing: no quality asserted)."""
    cfg = ExperimentConfig(dataset="sample-dl19", ranker="pointwise", model="smollm2-135m", depth=5, limit=2)
    res = run_experiment(cfg, tmp_path / "a", engine=smollm2_engine, cache=tmp_path / "c", progress=False)
    man = res.manifest
    assert man["model_sha256"] == smollm2_engine.describe()["gguf_sha256"]
    assert man["prompt"]["name"] == "pointwise"
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["usage"]["llm_calls"] >= 10 and m["latency"]["mean_s"] > 0  # 5 passages x 2 queries
    traces = _lines(tmp_path / "a" / "traces.jsonl")
    assert [t["qid"] for t in traces] == ["130510", "405717"] and all(t["trace"] for t in traces)
    again = run_experiment(cfg, tmp_path / "b", engine=smollm2_engine, cache=tmp_path / "c", progress=False)
    assert again.manifest["cache"]["misses"] == 0 and again.per_query == res.per_query


def test_ray_executor_equals_local(datasets_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import ray
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ship ByLength to the workers
    cfg = _dl19(datasets_dir, limit=12, concurrency=2)
    local = run_experiment(cfg, tmp_path / "local", ranker=ByLength(), cache=False, progress=False)
    remote = run_experiment(
        cfg.model_copy(update={"executor": "ray"}),
        tmp_path / "ray",
        ranker=ByLength(),
        cache=False,
        progress=False,
        ray_num_cpus=2,
    )
    assert not ray.is_initialized()  # the executor shut down the instance it started
    assert remote.per_query == local.per_query and remote.metrics == local.metrics
    assert (tmp_path / "ray" / "run.trec").read_text() == (tmp_path / "local" / "run.trec").read_text()
    assert len(_lines(tmp_path / "ray" / "results.jsonl")) == 12
    # config-built rankers in the workers (identity): same as local identity
    ident = ExperimentConfig(dataset="sample-dl19", ranker="identity", depth=20)
    a = run_experiment(ident, tmp_path / "il", cache=False, progress=False)
    b = run_experiment(
        ident.model_copy(update={"executor": "ray"}), tmp_path / "ir", cache=False, ray_num_cpus=2
    )
    assert a.metrics == b.metrics == a.first_stage_metrics


def test_invalid_configs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        ExperimentConfig(dataset="sample-dl19", metrics=["bleu@4"])
    with pytest.raises(ValueError):
        ExperimentConfig(dataset="sample-dl19", depth=0)
    with pytest.raises(ConfigError, match="needs an engine"):
        run_experiment(ExperimentConfig(dataset="sample-dl19", ranker="rankgpt"), tmp_path, cache=False)


def test_retriever_and_run_file_first_stages(tmp_path: Path) -> None:
    """``retriever:bm25`` indexes the corpus; a TREC file path is read as the first stage."""
    from hoprank.evals import load_dataset
    from hoprank.tools.bm25 import BM25Retriever

    cfg = ExperimentConfig(dataset="sample-hotpotqa", first_stage="retriever:bm25", depth=5)
    res = run_experiment(cfg, tmp_path / "bm25", cache=False, progress=False)
    ds = load_dataset("sample-hotpotqa")
    bm25 = BM25Retriever.from_documents(list(ds.corpus.values()))
    results = {r["qid"]: [d for d, _ in r["ranked"]] for r in _lines(tmp_path / "bm25" / "results.jsonl")}
    for qid, q in ds.queries.items():
        assert results[qid] == [d.id for d in bm25.search_sync(q.text, k=5)]
    assert "support_recall@5" in res.metrics and res.n_queries == 5
    from_file = ExperimentConfig(
        dataset="sample-hotpotqa", first_stage=str(tmp_path / "bm25" / "run.trec"), depth=5
    )
    again = run_experiment(from_file, tmp_path / "file", cache=False, progress=False)
    assert again.metrics == res.metrics


def test_refuses_to_resume_after_the_prompt_text_changed(datasets_dir: Path, tmp_path: Path) -> None:
    """Same config (same prompt path), edited template: resuming would mix two prompts."""
    src = ROOT / "hoprank" / "prompts" / "templates" / "rankgpt-short@1.yaml"
    mine = tmp_path / "my-rankgpt.yaml"
    mine.write_text(src.read_text().replace("name: rankgpt-short", "name: my-rankgpt"))
    cfg = _dl19(datasets_dir, limit=2, depth=5, ranker="rankgpt", prompt=str(mine))
    engine = ScriptedEngine(lambda messages: "[2] > [1]")
    out = tmp_path / "run"
    first = run_experiment(cfg, out, engine=engine, cache=False, progress=False, plots=False)
    assert first.executed == 2
    man = json.loads((out / "manifest.json").read_text())
    assert man["prompt"]["name"] == "my-rankgpt" and man["prompt"]["hash"]
    # unchanged: resumes
    again = run_experiment(cfg, out, engine=engine, cache=False, progress=False, plots=False)
    assert again.executed == 0 and again.resumed == 2
    mine.write_text(mine.read_text().replace("most relevant first", "best first"))
    with pytest.raises(ConfigError, match="prompt"):
        run_experiment(cfg, out, engine=engine, cache=False, progress=False, plots=False)
    redo = run_experiment(cfg, out, engine=engine, cache=False, progress=False, plots=False, overwrite=True)
    assert redo.executed == 2 and redo.resumed == 0
    assert json.loads((out / "manifest.json").read_text())["prompt"]["hash"] != man["prompt"]["hash"]


class _WeightsEngine(ScriptedEngine):
    """A scripted engine that reports the sha256 of (pretend) weights in describe()."""

    def __init__(self, sha: str) -> None:
        super().__init__(lambda messages: "[2] > [1]")
        self.sha = sha

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sha256": self.sha}


def test_refuses_to_resume_after_the_data_or_the_weights_changed(tmp_path: Path) -> None:
    """Same config, other bytes behind it: an edited corpus or other model weights."""
    import shutil

    from hoprank.evals import sample_path

    data = tmp_path / "dl"
    shutil.copytree(sample_path("sample-dl19"), data)
    cfg = ExperimentConfig(dataset=str(data), ranker="rankgpt", depth=5, limit=2)
    out = tmp_path / "run"
    kw: dict[str, Any] = {"cache": False, "progress": False, "plots": False}
    assert run_experiment(cfg, out, engine=_WeightsEngine("a" * 64), **kw).executed == 2
    assert run_experiment(cfg, out, engine=_WeightsEngine("a" * 64), **kw).resumed == 2
    with pytest.raises(ConfigError, match="model weights"):
        run_experiment(cfg, out, engine=_WeightsEngine("b" * 64), **kw)
    corpus = data / "corpus.jsonl"
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    rec = json.loads(lines[0])
    rec["text"] += " (edited)"
    corpus.write_text(json.dumps(rec) + "\n" + "".join(lines[1:]), encoding="utf-8")
    with pytest.raises(ConfigError, match="dataset content"):
        run_experiment(cfg, out, engine=_WeightsEngine("a" * 64), **kw)
    redo = run_experiment(cfg, out, engine=_WeightsEngine("b" * 64), overwrite=True, **kw)
    assert redo.executed == 2 and redo.resumed == 0


@pytest.mark.slow
def test_icr_manifest_records_its_prompt_and_resume_notices_an_edit(
    tmp_path: Path, smollm2_engine: Any
) -> None:
    """ICR keeps its template as ``.template``; the manifest used to find prompts by the
    attribute name ``prompt`` and recorded ``"prompt": null`` for a default ICR run, so an
    edited ICR template went unnoticed on resume. The ranker now says it (``describe()``)."""
    from hoprank.evals.build import prompt_info
    from hoprank.prompts import load_prompt

    cfg = ExperimentConfig(dataset="sample-dl19", ranker="icr", model="smollm2-135m", depth=5, limit=1)
    res = run_experiment(cfg, tmp_path / "a", engine=smollm2_engine, cache=False, progress=False, plots=False)
    icr = load_prompt("icr")
    assert res.manifest["prompt"] is not None and res.manifest["prompt"]["ref"] == icr.ref
    # Ray workers build their own rankers: the manifest falls back to the registered default
    assert prompt_info(cfg, None) == res.manifest["prompt"]
    # a prompt file of one's own, edited between runs: resume refuses to mix the two
    mine = tmp_path / "my-icr.yaml"
    src = ROOT / "hoprank" / "prompts" / "templates" / "icr@1.yaml"
    mine.write_text(src.read_text().replace("name: icr", "name: my-icr"))
    own = cfg.model_copy(update={"prompt": str(mine)})
    out = tmp_path / "b"
    first = run_experiment(own, out, engine=smollm2_engine, cache=False, progress=False, plots=False)
    assert first.manifest["prompt"]["name"] == "my-icr"
    assert first.manifest["prompt"]["hash"] != res.manifest["prompt"]["hash"]
    mine.write_text(mine.read_text().replace("Here are some paragraphs:", "Here are some passages:"))
    with pytest.raises(ConfigError, match="prompt"):
        run_experiment(own, out, engine=smollm2_engine, cache=False, progress=False, plots=False)


def test_cached_queries_are_flagged(tmp_path: Path) -> None:
    """A run replayed from the LLM cache says so per query, in metrics.json and report.md,
    does not present its seconds as measured, and ``compare`` flags it."""
    from hoprank.evals import compare

    cfg = ExperimentConfig(dataset="sample-dl19", ranker="rankgpt", depth=6, ranker_params={"window": 3})
    kw: dict[str, Any] = {"cache": tmp_path / "cache", "progress": False, "plots": False}
    run_experiment(cfg, tmp_path / "a", engine=ScriptedEngine(_rankgpt_script), **kw)
    run_experiment(cfg, tmp_path / "b", engine=ScriptedEngine(_rankgpt_script), **kw)
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["usage"]["cached_queries"] == 0 and a["latency"]["measured_queries"] == 3
    assert b["usage"]["cached_queries"] == 3 and b["latency"]["measured_queries"] == 0
    assert b["latency"]["measured_mean_s"] is None
    assert all(c["cached"] for c in b["per_query_cost"].values())
    recs = _lines(tmp_path / "b" / "results.jsonl")
    assert all(r["cached"] and r["cache"]["misses"] == 0 and r["cache"]["hits"] > 0 for r in recs)
    assert not any(r["cached"] for r in _lines(tmp_path / "a" / "results.jsonl"))
    report_a, report_b = ((tmp_path / d / "report.md").read_text() for d in "ab")
    assert "LLM cache" not in report_a and "seconds / query (mean) |" in report_a
    assert "3 of 3 queries were replayed" in report_b and "seconds / query (mean) |" not in report_b
    comp = compare([tmp_path / "a", tmp_path / "b"], metrics=["ndcg@10"], n_resamples=100)
    assert [r.cached_queries for r in comp.runs] == [0, 3]
    assert any("replayed from the LLM cache" in n for n in comp.notes)
    assert not comp.runs[0].s_per_query_cell().endswith("†") and comp.runs[1].s_per_query_cell().endswith("†")
    assert "†: some queries were replayed" in comp.to_markdown()


def test_limit_takes_the_first_judged_queries(tmp_path: Path) -> None:
    """``limit`` passes over queries without qrels and says how many it skipped."""
    import shutil

    from hoprank.evals import sample_path

    data = tmp_path / "dl"
    shutil.copytree(sample_path("sample-dl19"), data)
    qrels = data / "qrels.tsv"
    qrels.write_text("".join(x for x in qrels.open() if not x.startswith("130510\t")))
    cfg = ExperimentConfig(dataset=str(data), ranker="identity", depth=5, limit=2)
    res = run_experiment(cfg, tmp_path / "run", cache=False, progress=False, plots=False)
    assert list(res.per_query) == ["405717", "1115776"]
    assert res.manifest["queries"]["skipped_unjudged"] == 1
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["skipped_unjudged"] == 1 and m["n_judged"] == 2
    assert "--limit skipped 1 without qrels" in (tmp_path / "run" / "report.md").read_text()
    # without a limit every query with candidates stays (unjudged ones too), nothing skipped
    full = run_experiment(cfg.model_copy(update={"limit": None}), tmp_path / "all", cache=False, plots=False)
    assert len(full.per_query) == 3 and full.manifest["queries"]["skipped_unjudged"] == 0


def test_on_event_reports_start_and_each_query(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    cfg = ExperimentConfig(dataset="sample-dl19", ranker="identity", depth=5, limit=2)
    run_experiment(cfg, tmp_path / "run", cache=False, progress=False, plots=False, on_event=events.append)
    assert events[0] == {
        "event": "started",
        "run_dir": str(tmp_path / "run"),
        "label": cfg.label,
        "total": 2,
        "done": 0,
    }
    assert [(e["event"], e["done"], e["total"]) for e in events[1:]] == [("query", 1, 2), ("query", 2, 2)]
    assert {e["qid"] for e in events[1:]} == {"130510", "405717"}
