"""The benchmark scripts' shared engine choice and the agents benchmark's resumable output.

Real data (HotpotQA dev 500, DL19 BM25 top-k) and, for the llama.cpp path, the real
SmolLM2 GGUF served by llama.cpp on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_agents_benchmark_streams_records_and_resumes(tmp_path: Path) -> None:
    prefix = tmp_path / "a"
    first = _script(
        "agents_hotpotqa.py", "--systems", "a", "--limit", "2", "--data", str(SHARED / "datasets"),
        "--out", str(prefix),
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    rows = _jsonl(prefix.with_suffix(".jsonl"))
    assert [r["system"] for r in rows] == ["a", "a"]
    # a torn last line (a kill mid-write) is dropped; finished questions are kept and skipped
    with prefix.with_suffix(".jsonl").open("a", encoding="utf-8") as f:
        f.write('{"system": "a", "qid": ')
    again = _script(
        "agents_hotpotqa.py", "--systems", "a", "--limit", "3", "--data", str(SHARED / "datasets"),
        "--out", str(prefix), "--resume",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    rows2 = _jsonl(prefix.with_suffix(".jsonl"))
    assert len(rows2) == 3
    assert rows2[:2] == rows
    assert len({r["qid"] for r in rows2}) == 3
    assert "| (a) BM25 | 3 |" in prefix.with_suffix(".md").read_text(encoding="utf-8")


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
