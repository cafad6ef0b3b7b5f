"""``hoprank eval --task qa`` end to end on a real model (SmolLM2-135M: plumbing only, never
answer quality) over the shared HotpotQA set (BM25 over all 4,858 paragraphs), and
``hoprank compare`` on the two run folders it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hoprank.cli import app

pytest.importorskip("torch")
pytest.importorskip("transformers")


def _last_json(output: str) -> dict[str, Any]:
    """The last JSON line of a command's output (the model's loading bar shares it)."""
    start = output.rfind('{"run_dir"')
    assert start >= 0, output[-2000:]
    return dict(json.loads(output[start:].splitlines()[0]))


def test_cli_qa_c0_and_a_on_hotpotqa_then_compare(datasets_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    data = str(datasets_dir / "hotpotqa-dev-distractor-500")
    common = ["eval", "--task", "qa", "--dataset", data, "--limit", "2", "--cache", str(tmp_path / "cache")]
    c0 = runner.invoke(
        app, [*common, "--system", "c0", "--model", "smollm2-135m", "--out", str(tmp_path / "c0")]
    )
    assert c0.exit_code == 0, c0.output
    a = runner.invoke(app, [*common, "--system", "a", "--out", str(tmp_path / "a"), "--json"])
    assert a.exit_code == 0, a.output
    a_metrics = _last_json(a.output)["metrics"]
    assert a_metrics["support_recall@10"] == 0.5 and "em" not in a_metrics  # BM25 alone: no answer

    d = tmp_path / "c0"
    for f in ("manifest.json", "results.jsonl", "questions.jsonl", "metrics.json", "report.md", "run.trec"):
        assert (d / f).is_file(), f
    man = json.loads((d / "manifest.json").read_text())
    assert man["status"] == "complete" and len(man["model_sha256"]) == 64
    assert {p["role"] for p in man["prompts"]} == {"decompose", "bridge", "answer"}
    m = json.loads((d / "metrics.json").read_text())
    assert m["n_queries"] == 2 and {"support_recall@2", "mrr@10", "em", "f1"} <= set(m["aggregate"])
    rows = [json.loads(x) for x in (d / "questions.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["llm_calls"] >= 2 and row["tokens"] > 0 and isinstance(row["answer"], str)
        assert row["sub_questions"] and not row["cached"]
    assert "model: `smollm2-135m` (sha256" in (d / "report.md").read_text()

    again = runner.invoke(
        app, [*common, "--system", "c0", "--model", "smollm2-135m", "--out", str(d), "--json"]
    )  # every question is done: nothing runs again
    assert again.exit_code == 0, again.output
    assert _last_json(again.output)["resumed"] == 2

    cmp = runner.invoke(app, ["compare", str(tmp_path / "a"), str(d), "--out", str(tmp_path / "cmp")])
    assert cmp.exit_code == 0, cmp.output
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "a (bm25@20)" in md and "c0 (bm25@20+decompose+bridge+rrf(k=10,w=2)+answer@5)" in md
    assert "| support_recall@5 | 2 |" in md
