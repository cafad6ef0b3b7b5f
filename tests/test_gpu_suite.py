"""benchmarks/gpu_suite.py rehearsed on the CPU: a 2-layer Qwen2-shaped random model with
the real Qwen2.5 tokenizer runs every section of the prepared GPU benchmark (issue 22)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HOPRANK_SHARED", ROOT.parent / "shared"))


def _suite(*args: str, shared: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOPRANK_SHARED": str(shared), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), *args],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip


def test_gpu_suite_rehearsal_on_a_tiny_random_model(tmp_path: Path) -> None:
    from hoprank.llm.models.packs import resolve

    stage = tmp_path / "stage"
    prep = _suite(
        "--prepare", str(stage), "--tokenizer", str(resolve("qwen2.5-coder-0.5b").path), shared=SHARED
    )
    assert prep.returncode == 0, prep.stderr[-2000:]
    assert (stage / "tokenizer" / "tokenizer.json").is_file()
    assert (stage / "datasets" / "trec-dl-2019-passage" / "run.bm25.tsv").is_file()
    out = tmp_path / "out"
    res = _suite(
        "--shapes", "tiny", "--tokenizer", str(stage / "tokenizer"), "--out", str(out),
        "--models", str(tmp_path / "models"), "--rehearsal", shared=stage,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((out / "gpu_suite.json").read_text())
    assert data["skipped"] == [] and data["gpu"] is None
    assert data["matmul_peak_bf16"]["tflops"] > 0
    tiny = data["shapes"]["tiny"]
    assert tiny["model"]["random_weights"] is True and tiny["model"]["shape"] == "qwen2.5-tiny"
    new = tiny["new_query"]
    assert set(new) == {"default", "buckets", "sdpa", "buckets+sdpa"}
    for name, row in new.items():
        assert row["first_new_over_bare_new"] > 0 and row["first_repeat_over_bare_repeat"] > 0
        (q1, q2) = row["per_query"]
        assert {"first_new", "bare_after"} <= set(q1) and {"bare_new", "first_after"} <= set(q2)
        if "buckets" in name:  # FIRST's forwards padded to the rehearsal's buckets (512, 1024)
            assert row["prewarmed_lengths"] == [512, 1024]
            assert all(q["padded_to"] in (512, 1024) and q["padded_to"] >= q["tokens"] for q in (q1, q2))
        else:
            assert all(q["padded_to"] == q["tokens"] for q in (q1, q2))
    assert set(tiny["icr"]) == {"default", "sdpa"}
    assert tiny["icr"]["sdpa"]["icr_over_bare_new"] > 0
    for name in ("default", "buckets+sdpa"):
        batch = tiny["batched_first"][name]
        assert batch["1"]["useful_tflops"] > 0 and batch["2"]["peak_fraction"] > 0
        assert batch["2"]["same_ranking_as_batch1"] == 2
    assert tiny["rankers"]["summary"]["ratio"]["rankgpt_over_first"] > 0
    assert set(tiny["targets"]) >= {"first_new_over_bare_new", "icr_over_bare_new", "rankgpt_over_icr"}
    assert new["buckets+sdpa"]["engine"] == {
        "length_buckets": [512, 1024],
        "sdpa_backends": ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"],
    }
    assert new["default"]["engine"] == {"length_buckets": None, "sdpa_backends": None}
