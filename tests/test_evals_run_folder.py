"""Run folders: a failed run leaves nothing behind, ``overwrite`` starts over."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hoprank.errors import ConfigError, DatasetError, EngineError
from hoprank.evals import ExperimentConfig, run_experiment
from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.types import Document

KW: dict[str, Any] = {"cache": False, "progress": False, "plots": False}


class Reverse(BaseRanker):
    """The first stage reversed; raises on the query ``fail_on``."""

    name = "reverse"

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        if query == self.fail_on:
            raise EngineError("scripted failure")
        return RankerOutput(list(reversed(docs)))


def _cfg(**kw: Any) -> ExperimentConfig:
    return ExperimentConfig(**{"dataset": "sample-dl19", "ranker": "identity", "depth": 5, **kw})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_failed_inputs_leave_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "typo"
    with pytest.raises(DatasetError):
        run_experiment(_cfg(dataset="sample-dl1"), out, **KW)
    with pytest.raises(ConfigError, match="unknown ranker"):
        run_experiment(_cfg(ranker="nope"), out, **KW)
    with pytest.raises(ConfigError, match="needs an engine"):
        run_experiment(_cfg(ranker="first"), out, **KW)
    assert not (tmp_path / "runs").exists()


def test_failed_inputs_leave_an_existing_folder_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_experiment(_cfg(limit=2), out, **KW)
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    # without overwrite the other fingerprint is refused first, with it the input fails
    for overwrite in (False, True):
        with pytest.raises((DatasetError, ConfigError)):
            run_experiment(_cfg(dataset="sample-dl1", limit=2), out, overwrite=overwrite, **KW)
        with pytest.raises(ConfigError):
            run_experiment(_cfg(ranker="nope", limit=2), out, overwrite=overwrite, **KW)
    assert _snapshot(out) == before


def test_overwrite_starts_the_same_experiment_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = _cfg(limit=3)
    queries = list(json.loads(line)["text"] for line in _queries())
    with pytest.raises(EngineError):  # two queries done, the third fails
        run_experiment(cfg, out, ranker=Reverse(fail_on=queries[2]), **KW)
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    (out / "notes.txt").write_text("mine")
    resumed = run_experiment(cfg, out, ranker=Reverse(), **KW)
    assert (resumed.resumed, resumed.executed) == (2, 1)
    assert len(resumed.manifest["attempts"]) == 2

    redo = run_experiment(cfg, out, ranker=Reverse(), overwrite=True, **KW)
    assert (redo.resumed, redo.executed) == (0, 3)
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["attempts"]) == 1 and man["status"] == "complete"
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
    assert (out / "notes.txt").read_text() == "mine"  # not ours: kept


def _queries() -> list[str]:
    from hoprank.evals import sample_path

    return (sample_path("sample-dl19") / "queries.jsonl").read_text(encoding="utf-8").splitlines()


def test_a_file_is_not_a_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        run_experiment(_cfg(limit=1), out, **KW)
    assert out.read_text() == "x"
