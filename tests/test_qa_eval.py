"""QA evals (``hoprank eval --task qa``): presets, system files and overrides, the QA runner's
run folder, resume, cache flags, grids and ``hoprank compare`` on QA runs. Scripted
engines and the shipped HotpotQA sample only (no model)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from agents_fakes import ReverseRanker, dec_out
from typer.testing import CliRunner

from hoprank.agents import PRESETS, DecomposeRetrieveRerank, MultiHopAgent, QASystem, resolve_systems
from hoprank.agents.presets import apply_overrides, load_system_file
from hoprank.cli import app
from hoprank.errors import ConfigError, EngineError
from hoprank.evals import compare
from hoprank.evals.qa_runner import QAExperimentConfig, QAInputs, run_qa, run_qa_grid
from hoprank.llm import ScriptedEngine
from hoprank.tools import BM25Retriever
from hoprank.types import Document

SAMPLE = "sample-hotpotqa"
QUESTION_3 = "5ab3b0bf5542992ade7c6e39"  # the third question of the sample


def _reply(messages: Sequence[dict[str, str]], fail_on: str | None = None) -> str:
    """Scripted replies by prompt: decomposition, short answers, agent steps."""
    system, user = messages[0]["content"], messages[-1]["content"]
    if fail_on is not None and fail_on in user:
        raise EngineError("scripted failure")
    if "sub-questions" in system:
        q = user.rsplit("Question:", 1)[-1].strip().rstrip("?")
        w = q.split()  # two sub-questions that do not restate the question (hops.restates)
        return dec_out(f"Who is {' '.join(w[:4])}?", f"What is {' '.join(w[-4:])}?", find_first="")
    if "shortest possible answer" in system:
        return "Chief of Protocol [hpdev-00001]"
    return json.dumps({"notes": "", "action": "answer", "answer": "Chief of Protocol", "citations": []})[
        len('{"notes": "') :
    ]


def _engine(fail_on: str | None = None) -> ScriptedEngine:
    return ScriptedEngine(lambda messages: _reply(messages, fail_on))


def _question(n: int) -> str:
    from hoprank.evals import load_dataset

    return list(load_dataset(SAMPLE).queries.values())[n].text


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# --- presets, overrides, system files -------------------------------------------------


def test_presets_are_the_benchmark_systems() -> None:
    a, b, c0, c, d = (PRESETS[n] for n in ("a", "b", "c0", "c", "d"))
    for s in (a, b, c0, c):
        p = s.pipeline
        assert (p.k, p.pool_depth, p.top_k, p.rrf_k, p.original_weight) == (20, 20, 10, 10, 2.0)
        assert s.retriever == "bm25" and s.answer_k == 5
    assert not (a.decompose or a.bridge or a.ranker or a.answer) and not a.needs_engine
    assert b.ranker == "first" and not b.decompose and b.answer
    assert c0.decompose and c0.bridge and c0.ranker is None
    assert c.decompose and c.bridge and c.ranker == "first"
    assert d.kind == "agent" and d.agent.budget.max_steps == 4 and d.agent.k == 5 and d.ranker is None
    assert c.label == "c (bm25@20+decompose+bridge+rrf(k=10,w=2)+first@20+answer@5)"


def test_sdk_from_preset_builds_the_preset() -> None:
    bm25 = BM25Retriever.from_documents([Document(id="x", text="some words here")])
    eng = _engine()
    pipe = DecomposeRetrieveRerank.from_preset("c0", bm25, eng)
    assert pipe.config == PRESETS["c0"].pipeline
    assert pipe.decomposer is not None and pipe.bridge_answerer is not None and pipe.ranker is None
    assert DecomposeRetrieveRerank.from_preset("a", bm25).decomposer is None  # no engine needed
    tuned = DecomposeRetrieveRerank.from_preset("c", bm25, eng, ranker=ReverseRanker(), rrf_k=60)
    assert tuned.rrf_k == 60 and isinstance(tuned.ranker, ReverseRanker)
    assert DecomposeRetrieveRerank.from_preset("c", bm25, eng, ranker=None).ranker is None
    agent = MultiHopAgent.from_preset("d", eng, bm25)
    assert agent.budget.max_steps == 4 and agent.k == 5
    with pytest.raises(ConfigError, match="needs an engine"):
        DecomposeRetrieveRerank.from_preset("c0", bm25)


def test_overrides_shorthands_paths_and_errors() -> None:
    c0 = PRESETS["c0"]
    s = apply_overrides(
        c0, {"rrf_k": 60, "pipeline.pool_depth": 30, "ranker": "icr", "ranker_params.window": 10}
    )
    assert (s.pipeline.rrf_k, s.pipeline.pool_depth, s.ranker, s.ranker_params) == (
        60,
        30,
        "icr",
        {"window": 10},
    )
    assert PRESETS["c0"].pipeline.rrf_k == 10  # presets are not mutated
    d = apply_overrides(PRESETS["d"], {"max_steps": 6, "k": 8})
    assert d.agent.budget.max_steps == 6 and d.agent.k == 8
    assert apply_overrides(PRESETS["c"], {"ranker": "none"}).ranker is None
    with pytest.raises(ConfigError, match="unknown QA system parameter 'rrf'"):
        apply_overrides(c0, {"rrf": 3})
    with pytest.raises(ConfigError, match="k"):
        apply_overrides(c0, {"answer_k": 0})
    with pytest.raises(ConfigError, match="bridge needs decompose"):
        QASystem(bridge=True)


def test_resolve_systems_scoped_overrides_files_and_errors(tmp_path: Path) -> None:
    a, c = resolve_systems("a, c", {"rrf_k": 30, "c.ranker": "icr"})
    assert a.ranker is None and c.ranker == "icr" and a.pipeline.rrf_k == c.pipeline.rrf_k == 30
    f = tmp_path / "wide.yaml"
    f.write_text("preset: c0\npipeline: {k: 50, rrf_k: 60}\nanswer: false\n", encoding="utf-8")
    s = load_system_file(f)
    assert s.name == "wide" and s.decompose and s.bridge and not s.answer
    assert (s.pipeline.k, s.pipeline.rrf_k, s.pipeline.original_weight) == (50, 60, 2.0)
    (plain,) = resolve_systems(str(f))
    assert plain == s
    with pytest.raises(ConfigError, match="unknown QA system 'zz'"):
        resolve_systems("a,zz")
    with pytest.raises(ConfigError, match="named twice"):
        resolve_systems("a,a")
    bad = tmp_path / "bad.yaml"
    bad.write_text("retriever: sparse\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="retriever"):
        load_system_file(bad)


# --- the runner ---------------------------------------------------------------------


def _config(system: str, **kw: Any) -> QAExperimentConfig:
    return QAExperimentConfig(dataset=SAMPLE, system=resolve_systems(system)[0], model="scripted", **kw)


def test_run_folder_outputs_and_manifest(tmp_path: Path) -> None:
    res = run_qa(
        _config("c0"), tmp_path / "c0", inputs=QAInputs(engine=_engine()), cache=False, progress=False
    )
    d = res.run_dir
    for f in (
        "manifest.json",
        "results.jsonl",
        "questions.jsonl",
        "run.trec",
        "traces.jsonl",
        "metrics.json",
    ):
        assert (d / f).is_file(), f
    assert (d / "report.md").read_text().startswith("# hoprank QA eval: c0 (bm25@20+decompose+bridge")
    man = json.loads((d / "manifest.json").read_text())
    assert man["task"] == "qa" and man["status"] == "complete" and man["system"]["name"] == "c0"
    assert [p["role"] for p in man["prompts"]] == ["decompose", "bridge", "answer"]
    assert all("#" in p["ref"] for p in man["prompts"]) and man["dataset"]["hash"]
    m = json.loads((d / "metrics.json").read_text())
    assert m["task"] == "qa" and m["n_queries"] == 5 and m["first_stage"] == {}
    assert {"support_recall@2", "support_recall@10", "passage_recall@5", "mrr@10", "em", "f1"} <= set(
        m["metrics"]
    )
    assert m["aggregate"]["em"] == pytest.approx(0.2)  # the scripted answer is right for question 1 only
    assert m["system_stats"]["decomposition"]["mean_sub_questions"] == 2.0
    rows = _lines(d / "questions.jsonl")
    assert len(rows) == 5 and rows[0]["hops"] == 2 and rows[0]["answer"] == "Chief of Protocol"
    for key in (
        "retrieved",
        "em",
        "f1",
        "support_recall@5",
        "llm_calls",
        "tokens",
        "seconds",
        "sub_questions",
    ):
        assert key in rows[0], key
    assert rows[0]["llm_calls"] == 3  # decompose, bridge, answer
    steps = m["step_costs"]  # where the seconds go, from the traces
    assert steps["questions"] == 5 and steps["steps"]["decompose"]["calls"] == 1.0
    assert steps["steps"]["answer.short"]["calls"] == 1.0  # the bridge's short answer
    assert steps["steps"]["final answer.short"]["calls"] == 1.0  # the answering step's
    assert steps["steps"]["bridge"]["seconds"] == 0.0  # a wrapper: its call is the row above
    assert steps["steps"]["decompose"]["prompt_tokens"] > 0
    assert "Where the seconds go" in (d / "report.md").read_text()


def test_resume_after_a_failure_skips_finished_questions(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = _config("c0")
    with pytest.raises(EngineError):
        run_qa(cfg, out, inputs=QAInputs(engine=_engine(fail_on=_question(2))), cache=False, progress=False)
    done = _lines(out / "results.jsonl")
    assert [r["qid"] for r in done] == [r["qid"] for r in done][:2] and len(done) == 2
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    with (out / "results.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"qid": "torn')  # a kill mid-write
    eng = _engine()
    res = run_qa(cfg, out, inputs=QAInputs(engine=eng), cache=False, progress=False)
    assert (res.resumed, res.executed, res.n_queries) == (2, 3, 5)
    asked = {m["content"] for call in eng.calls for m in call["messages"]}
    assert not any(_question(0) in text for text in asked)  # finished questions are not re-run
    assert len(_lines(out / "results.jsonl")) == 5
    with pytest.raises(ConfigError, match="different experiment"):
        run_qa(_config("a"), out, cache=False, progress=False)


def test_grid_shares_the_cache_and_flags_replays(tmp_path: Path) -> None:
    systems = resolve_systems("a,b,c0,c,d")
    cfg = QAExperimentConfig(dataset=SAMPLE, system=systems[0], model="scripted")
    inputs = QAInputs(engine=_engine(), ranker=ReverseRanker())
    results = run_qa_grid(
        cfg, systems, tmp_path / "grid", inputs=inputs, cache=tmp_path / "cache", progress=False
    )
    assert [r.run_dir.name for r in results] == ["a", "b", "c0", "c", "d"]
    assert sorted(p.name for p in (tmp_path / "grid").iterdir()) == ["a", "b", "c", "c0", "d"]
    by = {r.run_dir.name: json.loads((r.run_dir / "metrics.json").read_text()) for r in results}
    assert by["a"]["usage"]["llm_calls"] == 0 and "em" not in by["a"]["aggregate"]
    man_c0 = json.loads((tmp_path / "grid" / "c0" / "manifest.json").read_text())
    assert man_c0["cache"]["misses"] >= 10  # its own decompositions and bridges (5 + 5) are new
    assert by["c"]["usage"]["cached_questions"] == 5  # c replays c0's decompositions and bridges
    assert all(r["cached"] for r in _lines(tmp_path / "grid" / "c" / "questions.jsonl"))
    assert by["c"]["step_costs"]["questions"] == 0  # replayed seconds are not measured ones
    assert by["d"]["step_costs"]["steps"]["agent.step"]["calls"] == 1.0
    assert by["d"]["system_stats"]["agent"]["states"] == {"answered": 5}
    assert "agent_em" in by["d"]["aggregate"] and "citation_precision" in by["d"]["aggregate"]
    man_a = json.loads((tmp_path / "grid" / "a" / "manifest.json").read_text())
    assert man_a["engine"] is None and man_a["model_sha256"] is None and man_a["prompts"] == []
    comp = compare(sorted((tmp_path / "grid").iterdir()), n_resamples=200)
    assert comp.baseline.startswith("a (bm25@20)")
    em = next(mc for mc in comp.metrics if mc.metric == "em")
    assert next(iter(em.means)).startswith("b (") and not any(k.startswith("a (") for k in em.means)
    assert any("metric em: a (bm25@20) has none" in n for n in comp.notes)
    md = comp.to_markdown()
    assert "| em | 5 | – |" in md


# --- the command line ---------------------------------------------------------------


def test_cli_qa_single_grid_yaml_compare_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    sysfile = tmp_path / "a10.yaml"
    sysfile.write_text("preset: a\npipeline: {k: 10}\n", encoding="utf-8")
    base = ["eval", "--task", "qa", "--dataset", SAMPLE, "--no-cache"]
    one = runner.invoke(app, [*base, "--system", "a", "--out", str(tmp_path / "one"), "--json"])
    assert one.exit_code == 0, one.output
    summary = json.loads(one.output.strip().splitlines()[-1])
    assert summary["system"] == "a" and summary["metrics"]["support_recall@5"] == pytest.approx(0.6)
    grid = runner.invoke(app, [*base, "--system", f"a,{sysfile}", "--out", str(tmp_path / "grid")])
    assert grid.exit_code == 0, grid.output
    assert "| a10 (bm25@10) | 5 |" in grid.output and "hoprank compare" in grid.output
    again = runner.invoke(app, [*base, "--system", "a", "--out", str(tmp_path / "one"), "--json"])
    assert json.loads(again.output.strip().splitlines()[-1])["resumed"] == 5
    cmp = runner.invoke(app, ["compare", *map(str, sorted((tmp_path / "grid").iterdir())), "--json"])
    assert cmp.exit_code == 0, cmp.output
    labels = [r["label"] for r in json.loads(cmp.output)["runs"]]
    assert labels == ["a (bm25@20)", "a10 (bm25@10)"]
    for bad in (
        ["--system", "nope"],
        ["--system", "a", "-p", "rrf=1"],
        ["--system", "a", "--ranker", "first"],
        ["--system", "b", "-p", "ranker=no-such-ranker", "--model", "smollm2-135m"],
        ["--system", "c0", "--model", "no-such-model"],
        [],
    ):
        res = runner.invoke(app, [*base, *bad, "--out", str(tmp_path / "bad")])
        assert res.exit_code == 2, (bad, res.output)
    assert not (tmp_path / "bad").exists()
    rank_with_system = runner.invoke(app, ["eval", "--dataset", SAMPLE, "--system", "a"])
    assert rank_with_system.exit_code == 2 and "--system needs --task qa" in rank_with_system.output
