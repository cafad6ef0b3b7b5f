"""``compare`` labels show ranker parameters (and first stages when they differ)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hoprank.evals.compare import compare, params_label


def _run(
    root: Path,
    folder: str,
    label: str,
    params: dict[str, Any],
    *,
    first_stage: str = "bm25",
    name: str | None = None,
    vals: tuple[float, float] = (1.0, 0.0),
    level: int = 1,
) -> Path:
    d = root / folder
    d.mkdir()
    per_query = {"q1": {"mrr@10": vals[0]}, "q2": {"mrr@10": vals[1]}}
    metrics = {
        "label": label,
        "metrics": ["mrr@10"],
        "n_queries": 2,
        "relevance_level": level,
        "relevance_source": "dataset.json",
        "aggregate": {"mrr@10": sum(vals) / 2},
        "per_query": per_query,
    }
    manifest = {
        "label": label,
        "config": {"name": name, "ranker_params": params},
        "dataset": {"hash": "h"},
        "first_stage": {"name": first_stage},
        "ranker": {"name": label.split("/")[0], "params": params},
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_params_label() -> None:
    assert params_label({}) == ""
    assert params_label({"window": 20, "layout": "passages-first"}) == "[layout=passages-first,window=20]"
    assert params_label({"x": "a" * 40}) == "[x=" + "a" * 21 + "...]"
    assert params_label({"heads": [1, 2]}) == "[heads=[1,2]]"


def test_two_icr_layouts_are_told_apart(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", "icr/qwen", {"layout": "query-first"})
    b = _run(tmp_path, "b", "icr/qwen", {"layout": "query-last"}, vals=(0.5, 0.5))
    comp = compare([a, b], n_resamples=100)
    assert [r.label for r in comp.runs] == ["icr/qwen[layout=query-first]", "icr/qwen[layout=query-last]"]
    assert comp.metrics[0].delta["icr/qwen[layout=query-last]"] == 0.0


def test_first_stage_shown_when_it_differs_and_names_kept(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", "first", {}, first_stage="bm25")
    b = _run(tmp_path, "b", "first", {}, first_stage="fused")
    c = _run(tmp_path, "c", "mine", {"window": 5}, first_stage="bm25", name="mine")
    comp = compare([a, b, c], n_resamples=100)
    assert [r.label for r in comp.runs] == ["first on bm25", "first on fused", "mine on bm25"]
    d = _run(tmp_path, "d", "icr/qwen", {"k": 1})
    e = _run(tmp_path, "e", "icr/qwen", {"k": 1})
    assert [r.label for r in compare([d, e], n_resamples=100).runs] == [
        "icr/qwen[k=1] (d)",
        "icr/qwen[k=1] (e)",
    ]


def test_different_relevance_levels_are_flagged(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", "x", {}, level=2)
    b = _run(tmp_path, "b", "y", {}, level=1)
    comp = compare([a, b], n_resamples=100)
    assert any("different levels" in n for n in comp.notes)
    assert [(r.relevance_level, r.relevance_source) for r in comp.runs] == [
        (2, "dataset.json"),
        (1, "dataset.json"),
    ]
    assert not compare([a, _run(tmp_path, "c", "z", {}, level=2)], n_resamples=100).notes
