"""Every command follows the README's exit-code table; names and parameters come from
the ranker registry and are checked before a model loads; progress on long work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hoprank.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
ITEM = '{"query": "capital of France", "documents": ["Bananas are yellow.", "Paris is in France."]}\n'


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load an engine fails the test."""
    import hoprank.llm

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a model was loaded: {args}")

    monkeypatch.setattr(hoprank.llm, "load_engine", refuse)


def _eval(tmp_path: Path, *args: str) -> list[str]:
    return ["eval", "-d", "sample-dl19", "--limit", "1", "--depth", "3", "--no-cache", "-o", str(tmp_path / "run"), *args]  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [
        ["rerank", "-r", "first", "-m", "no-such-model"],
        ["decompose", "-m", "no-such-model", "a question?"],
        ["ask", "a question?", "-c", "README.md", "-m", "no-such-model"],
        ["serve", "-m", "no-such-model", "--port", "1"],
        ["eval", "-r", "first", "-m", "no-such-model"],
    ],
)
def test_an_unknown_model_exits_2_from_every_command(
    command: list[str], tmp_path: Path, no_model_loads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("HOPRANK_API_TOKEN", raising=False)
    args = _eval(tmp_path, *command[1:]) if command[0] == "eval" else command
    res = runner.invoke(app, args, input=ITEM)
    assert res.exit_code == 2, res.output
    assert "unknown model 'no-such-model'" in res.stderr and "smollm2-135m" in res.stderr
    assert not (tmp_path / "run").exists()  # a failed eval leaves no run folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-r", "first", "-p", "windw=4"], "windw"),
        (["-r", "first", "-p", "window=1"], "window must be >= 2"),
        (["-r", "pointwise", "-p", "batch_size=0"], "batch_size"),
        (["-r", "identity", "-p", "window=4"], "identity takes no parameters"),
        (["-r", "nope"], "unknown ranker 'nope'"),
    ],
)
def test_bad_ranker_params_exit_2_before_a_model_loads(
    args: list[str], message: str, tmp_path: Path, no_model_loads: None
) -> None:
    for command in (["rerank", "-m", "smollm2-135m", *args], _eval(tmp_path, "-m", "smollm2-135m", *args)):
        res = runner.invoke(app, command, input=ITEM)
        assert res.exit_code == 2, res.output
        assert message in res.stderr
    assert not (tmp_path / "run").exists()


def test_eval_input_errors_leave_no_run_folder(tmp_path: Path, no_model_loads: None) -> None:
    for args in (["-d", "sample-dl1"], ["--prompt", "no-such-prompt", "-r", "first", "-m", "smollm2-135m"]):
        res = runner.invoke(app, [*_eval(tmp_path), *args])
        assert res.exit_code == 2, res.output
    assert not (tmp_path / "run").exists()


def test_ranker_help_comes_from_the_registry() -> None:
    from hoprank.rankers import ranker_names

    for command in (["eval", "--help"], ["rerank", "--help"], ["ask", "--help"]):
        res = runner.invoke(app, command, env={"COLUMNS": "300"})
        assert res.exit_code == 0
        assert ", ".join(ranker_names()) in res.stdout, command


def test_eval_overwrite_starts_over(tmp_path: Path) -> None:
    def run(*extra: str) -> dict[str, Any]:
        res = runner.invoke(app, [*_eval(tmp_path, "--json"), "--limit", "2", *extra])
        assert res.exit_code == 0, res.output
        out: dict[str, Any] = json.loads(res.stdout)
        return out

    assert run()["resumed"] == 0
    assert run()["resumed"] == 2
    assert run("--overwrite")["resumed"] == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(manifest["attempts"]) == 1


def test_eval_without_model_uses_the_default_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``eval -r pointwise`` without ``--model`` runs on ``DEFAULT_MODEL`` (here made the
    135M pack to keep the test short) and says so on stderr."""
    import hoprank.llm.models.packs

    monkeypatch.setattr(hoprank.llm.models.packs, "DEFAULT_MODEL", "smollm2-135m")
    args = [*_eval(tmp_path, "-r", "pointwise", "--json", "--engine-param", "threads=2"), "--depth", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "no --model" in res.stderr and "smollm2-135m" in res.stderr
    assert "Loading weights" not in res.stderr  # --json: no library progress bars either
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["model"] == "smollm2-135m" and manifest["engine"]["model"] == "smollm2-135m"


_NO_TORCH = """
import sys
sys.modules["torch"] = None  # as if the local extra were not installed
from hoprank.cli import app
app(sys.argv[1:])
"""


def test_a_missing_extra_exits_2_from_rerank_and_eval(tmp_path: Path) -> None:
    for args in (["rerank", "-r", "first", "-m", "smollm2-135m"], _eval(tmp_path, "-r", "first", "-m", "smollm2-135m")):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-c", _NO_TORCH, *args], input=ITEM, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "pip install 'hoprank[local]'" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_rerank_shows_progress_on_a_terminal_unless_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    import hoprank.cli._common as common
    import hoprank.cli.rerank as cli_rerank

    assert common.show_progress(True) is False
    monkeypatch.setattr(cli_rerank, "show_progress", lambda quiet: not quiet)
    res = runner.invoke(app, ["rerank", "-r", "identity", "--json"], input=ITEM * 3)
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 3  # stdout keeps only the records
    assert "ranking (identity)" in res.stderr and "3/3" in res.stderr
    quiet = runner.invoke(app, ["rerank", "-r", "identity", "--json", "--quiet"], input=ITEM * 3)
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_ask_shows_what_it_is_doing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hoprank.cli.agents as cli_agents
    from hoprank.llm.engines.scripted import ScriptedEngine

    engine = ScriptedEngine(lambda messages: "Paris [1]")
    monkeypatch.setattr(cli_agents, "_engine", lambda *a, **k: engine)
    monkeypatch.setattr(cli_agents, "show_progress", lambda quiet: not quiet)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "1", "text": "Paris is the capital of France."}\n', encoding="utf-8")
    res = runner.invoke(app, ["ask", "capital of France?", "-c", str(corpus), "--json"])
    assert res.exit_code == 0, res.output
    json.loads(res.stdout)
    assert "answering" in res.stderr
    quiet = runner.invoke(app, ["ask", "capital of France?", "-c", str(corpus), "--json", "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_an_unnamed_missing_dependency_is_exit_2_too() -> None:
    from hoprank.cli._common import EXIT_RUNTIME, EXIT_USAGE, exit_code
    from hoprank.errors import EngineError, MissingExtra

    assert exit_code(ModuleNotFoundError("No module named 'x'", name="x")) == EXIT_USAGE
    assert exit_code(MissingExtra("local", "torch")) == EXIT_USAGE
    assert exit_code(EngineError("boom")) == exit_code(RuntimeError("bug")) == EXIT_RUNTIME


def test_bm25s_debug_lines_only_with_verbose(tmp_path: Path) -> None:
    """``--first-stage retriever:bm25``: bm25s sets its logger to DEBUG; ``setup_logging``
    keeps its warnings only unless ``--verbose`` (for ``--task rank`` and ``--task qa``)."""
    import logging
    import os

    from hoprank.cli._common import setup_logging

    bm25s = logging.getLogger("bm25s")
    debug = logging.LogRecord("bm25s", logging.DEBUG, __file__, 1, "Building index", None, None)
    try:
        setup_logging(False)
        assert not bm25s.filter(debug)
        setup_logging(True)
        assert bm25s.filter(debug)
    finally:
        setup_logging(False)
    args = ["eval", "-d", "sample-dl19", "-r", "identity", "--first-stage", "retriever:bm25", "--depth", "5"]
    args += ["--limit", "1", "--no-cache", "--out", str(tmp_path / "run"), "--json"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "hoprank", *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG" not in proc.stderr and "Building index" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["n_queries"] == 1
