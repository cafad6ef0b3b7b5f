"""Crash safety: eval runs killed with SIGKILL resume to identical results, and the
LLM-call cache survives torn or garbage entries (writes are atomic).

The run is real (TREC DL19, BM25 top-20, RankGPT through the evals runner and its
cache) with a scripted engine as the cheap model.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _crashkit import SlowReverse, config, run

from hoprank.llm.base import Message
from hoprank.llm.engines.cached import CachedEngine

ROOT = Path(__file__).resolve().parents[2]
KIT = Path(__file__).with_name("_crashkit.py")
N_QUERIES = 43

pytestmark = pytest.mark.timeout(300)


def _lines(path: Path) -> list[dict[str, Any]]:
    """Complete lines of results.jsonl (a torn last line, without its newline, is skipped)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(x) for x in text[: text.rfind("\n") + 1].splitlines() if x.strip()]


def _cache_entries(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*.json") if not p.name.startswith(".")]


def _kill_after(args: list[str], *, lines: int | None, seconds: float | None, results: Path) -> int:
    """Start a child run and SIGKILL it after ``lines`` results or ``seconds``; returns
    the child's exit code (negative: killed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(KIT.parent)])}
    proc = subprocess.Popen([sys.executable, str(KIT), *args], env=env, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 120:
        done = results.read_text().count("\n") if results.exists() else 0
        if (lines is not None and done >= lines) or (
            seconds is not None and time.monotonic() - t0 >= seconds
        ):
            break
        time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"child failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return proc.returncode


def test_sigkill_at_random_points_resumes_to_identical_metrics(datasets_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(20261123)
    out, cache = tmp_path / "killed", tmp_path / "cache"
    results = out / "results.jsonl"
    args = [str(datasets_dir), str(out), str(cache)]
    kills = 0
    # kill points: by progress (random query counts, increasing) and by wall time
    # (random seconds: may land during start-up, a results write or the cache writes)
    points: list[tuple[int | None, float | None]] = [(n, None) for n in sorted(rng.sample(range(3, 40), 3))]
    points += [(None, rng.uniform(0.2, 2.5)) for _ in range(2)]
    for lines, seconds in points:
        before = len(_lines(results))
        code = _kill_after(args, lines=lines, seconds=seconds, results=results)
        kills += code == -signal.SIGKILL
        got = _lines(results)
        qids = [r["qid"] for r in got]
        assert len(qids) == len(set(qids)), "a killed run left duplicate queries"
        assert len(got) >= before  # resuming never loses finished queries
        if rng.random() < 0.5:  # a kill inside a write: a torn last line on top
            with open(results, "a") as f:
                f.write('{"qid": "torn", "ranked": [["1", 0.')
    assert kills >= 3
    # every cache entry written so far is complete JSON (atomic writes)
    for entry in _cache_entries(cache):
        data = json.loads(entry.read_text())
        assert data["method"] == "generate" and data["value"]["text"]
    # finish in-process, then compare with an uninterrupted run (no cache)
    engine = SlowReverse(delay=0.0)
    from hoprank.evals import run_experiment

    res = run_experiment(config(datasets_dir), out, engine=engine, cache=cache, progress=False, plots=False)
    ref = run(datasets_dir, tmp_path / "ref", cache=False, delay=0.0)
    assert res.resumed + res.executed == N_QUERIES
    final = _lines(results)
    assert sorted(r["qid"] for r in final) == sorted(ref.per_query) and len(final) == N_QUERIES
    assert res.per_query == ref.per_query and res.metrics == ref.metrics
    assert (out / "run.trec").read_text() == (tmp_path / "ref" / "run.trec").read_text()
    man = json.loads((out / "manifest.json").read_text())
    # one attempt per child that got past start-up (killed, or finished before its kill
    # point on a fast machine) plus the in-process run; kills at start-up log none
    assert man["status"] == "complete" and 2 <= len(man["attempts"]) <= len(points) + 1
    # the resumed part of the work came from the cache where the killed runs had got to
    assert res.metrics["ndcg@10"] != res.first_stage_metrics["ndcg@10"]


# ----------------------------------------------------------------------------- the LLM cache

MSGS: list[Message] = [{"role": "user", "content": "[1] a\n[2] b\n[3] c\n"}]


class Counting(SlowReverse):
    def __init__(self) -> None:
        super().__init__(delay=0.0)


async def _one(engine: CachedEngine) -> str:
    return (await engine.generate(MSGS, max_tokens=20)).text


@pytest.mark.parametrize(
    "damage",
    [
        "truncate-half",
        "truncate-1",
        "empty",
        "binary",
        "wrong-shape",
        "wrong-type",
        "not-json-object",
        "directory",
    ],
)
async def test_cache_ignores_and_rewrites_damaged_entries(tmp_path: Path, damage: str) -> None:
    inner = Counting()
    cache = CachedEngine(inner, tmp_path)
    assert await _one(cache) == "[3] > [2] > [1]" and len(inner.calls) == 1
    (entry,) = _cache_entries(tmp_path)
    good = entry.read_bytes()
    if damage == "truncate-half":
        entry.write_bytes(good[: len(good) // 2])
    elif damage == "truncate-1":
        entry.write_bytes(good[:-1])
    elif damage == "empty":
        entry.write_bytes(b"")
    elif damage == "binary":
        entry.write_bytes(b"\xff\xfe\x00garbage\x80")
    elif damage == "wrong-shape":
        entry.write_text(json.dumps({"format": 1, "value": {"nope": 1}}))
    elif damage == "wrong-type":
        entry.write_text(json.dumps({"format": 1, "value": {"text": ["not", "a", "string"]}}))
    elif damage == "not-json-object":
        entry.write_text("[1, 2, 3]")
    else:
        entry.unlink()
        entry.mkdir()
    fresh = CachedEngine(inner, tmp_path)
    assert await _one(fresh) == "[3] > [2] > [1]"  # the right answer, never the garbage
    assert fresh.misses == 1 and len(inner.calls) == 2
    if damage != "directory":
        assert entry.read_bytes() == good  # rewritten whole
        again = CachedEngine(inner, tmp_path)
        assert await _one(again) == "[3] > [2] > [1]" and again.hits == 1 and len(inner.calls) == 2


async def test_cache_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inner = Counting()
    cache = CachedEngine(inner, tmp_path)
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        replaced.append((str(src), str(dst)))
        # at the moment of the rename the temporary file is complete and fsync'd
        json.loads(Path(src).read_text())
        assert not Path(dst).exists()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    await _one(cache)
    (src, dst), *_ = replaced
    assert Path(src).parent == Path(dst).parent  # same folder: a rename, atomic on POSIX
    assert Path(src).name.startswith(".") and not os.path.exists(src)  # noqa: ASYNC240

    # a crash before the rename leaves the temporary file only: the entry is a miss
    def crash(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt("killed between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    other: list[Message] = [{"role": "user", "content": "[1] x\n[2] y\n"}]
    with pytest.raises(KeyboardInterrupt):
        await cache.generate(other, max_tokens=20)
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(_cache_entries(tmp_path)) == 1  # no torn entry became visible
    later = CachedEngine(inner, tmp_path)
    assert (await later.generate(other, max_tokens=20)).text == "[2] > [1]" and later.misses == 1


def test_cache_survives_sigkill_during_writes(datasets_dir: Path, tmp_path: Path) -> None:
    """Kill a run at random moments while it writes cache entries: whatever is on disk is
    either absent or complete, and a rerun over that cache is correct."""
    rng = random.Random(7)
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = [str(datasets_dir), str(out), str(cache)]
    for _ in range(2):
        _kill_after(args, lines=None, seconds=rng.uniform(1.0, 2.5), results=out / "results.jsonl")
        for entry in _cache_entries(cache):
            json.loads(entry.read_text())  # complete, or it would not have this name
    ref = run(datasets_dir, tmp_path / "ref", cache=False, delay=0.0)
    res = run(datasets_dir, tmp_path / "fresh", cache=cache, delay=0.0)
    assert res.per_query == ref.per_query
