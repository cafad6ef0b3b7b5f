"""ICR with selected retrieval heads: per-head attention rows, head scores, selection,
saved selections bound to the model, and replay == live ranking (real SmolLM2, real DL19)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from hoprank.errors import ConfigError, InvalidInput
from hoprank.evals.dataset import load_common
from hoprank.rankers import make_ranker
from hoprank.rankers.heads import (
    HeadRecord,
    engine_identity,
    load_selection,
    read_records,
    replay,
    save_selection,
    select_from_records,
    write_records,
)
from hoprank.rankers.icr import ICRRanker
from hoprank.types import Document


@pytest.fixture(scope="module")
def dl19_items(datasets_dir: Path) -> list[tuple[str, str, list[Document], dict[str, int]]]:
    ds = load_common(datasets_dir / "trec-dl-2019-passage")
    run = ds.run("bm25")
    out = []
    for qid in [q for q in ds.queries if q in run and ds.qrels.get(q)][:2]:
        docs = [Document(id=d.id, text=" ".join(d.text.split()[:30])) for d in ds.candidates(qid, run, 6)]
        out.append((qid, ds.queries[qid].text, docs, ds.qrels[qid]))
    return out


def _shape(engine: Any) -> tuple[int, int]:
    cfg = engine.model.config
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


def test_attention_rows_heads_sum_and_per_head(smollm2_engine: Any, dl19_items: Any) -> None:
    _qid, query, docs, _ = dl19_items[0]
    r = ICRRanker(smollm2_engine)
    lay = r._layout(query, [r._doc_text(d) for d in docs])
    n_layers, n_heads = _shape(smollm2_engine)
    full = asyncio.run(smollm2_engine.attention_rows(lay.prefix, [lay.suffix], layers=[2], per_head=True))
    per = full.head_rows[0]
    assert per.shape == (1, n_heads, full.prefix_tokens)
    np.testing.assert_allclose(per.sum(axis=(0, 1)), full.rows[0], rtol=1e-5, atol=1e-6)
    # every head of layer 2, named as heads, is the same as layers=[2]
    named = asyncio.run(
        smollm2_engine.attention_rows(lay.prefix, [lay.suffix], heads=[(2, h) for h in range(n_heads)])
    )
    np.testing.assert_allclose(named.rows[0], full.rows[0], rtol=1e-5, atol=1e-6)
    # two heads: the sum of exactly those two per-head rows
    two = asyncio.run(smollm2_engine.attention_rows(lay.prefix, [lay.suffix], heads=[(2, 1), (2, 0)]))
    assert two.heads == [(2, 0), (2, 1)] and two.layers == [2]
    np.testing.assert_allclose(two.rows[0], per[0, 0] + per[0, 1], rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInput):
        asyncio.run(smollm2_engine.attention_rows(lay.prefix, [lay.suffix], heads=[(n_layers, 0)]))
    with pytest.raises(InvalidInput):
        asyncio.run(smollm2_engine.attention_rows(lay.prefix, [lay.suffix], heads=[(0, n_heads)]))
    with pytest.raises(InvalidInput):
        asyncio.run(smollm2_engine.attention_rows(lay.prefix, [lay.suffix], layers=[0], heads=[(0, 0)]))


def test_head_scores_replay_equals_live_ranker(smollm2_engine: Any, dl19_items: Any) -> None:
    qid, query, docs, qrels = dl19_items[1]
    base = ICRRanker(smollm2_engine)
    scores = asyncio.run(base.head_scores(query, docs))
    n_layers, n_heads = _shape(smollm2_engine)
    assert scores.shape == (len(docs), n_layers, n_heads)
    default = base.rank(query, docs)
    by_id = {d.id: d.score for d in default.documents}
    # all heads summed == the default ICR score of each passage
    for i, d in enumerate(docs):
        assert scores[i].sum() == pytest.approx(by_id[d.id], rel=1e-4, abs=1e-6)
    heads = [(n_layers - 1, 0), (n_layers // 2, 3), (1, n_heads - 1)]
    live = ICRRanker(smollm2_engine, heads=heads).rank(query, docs)
    want = sum(scores[:, layer, head] for layer, head in heads)
    order = sorted(range(len(docs)), key=lambda i: (-float(want[i]), i))
    assert live.ids == [docs[i].id for i in order]
    assert live.trace[0].input["heads"] == [list(h) for h in heads]
    rec = HeadRecord(dataset="dl19", qid=qid, doc_ids=[d.id for d in docs], qrels=qrels, scores=scores)
    from hoprank.evals.metrics import ndcg_at

    assert replay([rec], heads)[f"dl19/{qid}"] == pytest.approx(ndcg_at(live.ids, qrels, 10))


def test_selection_is_saved_bound_and_loaded_by_name(
    smollm2_engine: Any, dl19_items: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOPRANK_HEADS", str(tmp_path / "heads"))
    model, sha = engine_identity(smollm2_engine)
    assert len(sha) == 64  # the pack's GGUF sha256
    n_layers, n_heads = _shape(smollm2_engine)
    recs = []
    for qid, query, docs, qrels in dl19_items:
        scores = asyncio.run(ICRRanker(smollm2_engine).head_scores(query, docs))
        recs.append(
            HeadRecord(dataset="dl19", qid=qid, doc_ids=[d.id for d in docs], qrels=qrels, scores=scores)
        )
    write_records(recs, tmp_path / "r.jsonl")
    back = read_records(tmp_path / "r.jsonl")
    np.testing.assert_allclose(back[0].scores, recs[0].scores, rtol=1e-6, atol=1e-9)
    sel = select_from_records(back, k=4, name="smol-test", model=model, model_sha256=sha)
    assert len(sel.heads) == 4 and all(0 <= la < n_layers and 0 <= h < n_heads for la, h in sel.heads)
    save_selection(sel)
    assert (tmp_path / "heads" / "smol-test.json").is_file()
    ranker = make_ranker("icr", smollm2_engine, heads="smol-test")
    assert isinstance(ranker, ICRRanker) and ranker.heads == sel.heads
    assert ranker.describe()["params"]["heads"] == sel.ref
    ranking = ranker.rank(dl19_items[0][1], dl19_items[0][2])
    assert ranking.trace[0].input["heads"] == sel.ref
    # a selection made for another model is refused
    other = sel.model_copy(update={"name": "other", "model_sha256": "0" * 64})
    save_selection(other)
    with pytest.raises(ConfigError, match="sha256"):
        ICRRanker(smollm2_engine, heads="other")
    with pytest.raises(ConfigError, match="no head selection"):
        ICRRanker(smollm2_engine, heads="missing")
    (tmp_path / "heads" / "bad.json").write_text(json.dumps({"name": 1}))
    with pytest.raises(ConfigError):
        load_selection("bad")
    with pytest.raises(ConfigError):
        ICRRanker(smollm2_engine, heads=[(0, 0)], layers=[0])


def test_select_from_records_keeps_the_heads_that_rank() -> None:
    rng = np.random.default_rng(0)
    recs = []
    for q in range(6):
        ids = [f"d{i}" for i in range(8)]
        qrels = {"d5": 2, "d6": 1}
        s = rng.normal(size=(8, 3, 4))
        s[5, 2, 1] += 10.0  # head (2, 1) always puts the best passage first
        s[6, 2, 1] += 5.0
        s[5, 0, 3] += 3.0  # head (0, 3) finds the best one only
        recs.append(HeadRecord(dataset="x", qid=str(q), doc_ids=ids, qrels=qrels, scores=s))
    sel = select_from_records(recs, k=2, name="t", model="m", model_sha256="s")
    assert sel.heads == [(0, 3), (2, 1)]
    assert sel.head_ndcg[0] == pytest.approx(1.0)
    assert sel.selected_ndcg is not None and sel.all_heads_ndcg is not None
    assert sel.selected_ndcg > sel.all_heads_ndcg
    with pytest.raises(InvalidInput):
        select_from_records(recs, k=13, name="t", model="m", model_sha256="s")
    unjudged = [r.model_copy(update={"qrels": {"d0": 0}}) for r in recs]
    with pytest.raises(InvalidInput):
        select_from_records(unjudged, k=2, name="t", model="m", model_sha256="s")


def test_heads_cli_select_and_list(tmp_path: Path) -> None:
    """`hoprank heads select` on the shipped DL19 sample with SmolLM2, then `heads list`."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HOPRANK_HEADS": str(tmp_path / "h")}
    cmd = [sys.executable, "-m", "hoprank", "heads", "select", "--dataset", "sample-dl19", "--model"]
    cmd += [
        "smollm2-135m",
        "--k",
        "3",
        "--depth",
        "4",
        "--name",
        "cli-test",
        "--records",
        str(tmp_path / "r.jsonl"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    saved = json.loads(out.stdout)
    assert saved["name"] == "cli-test" and len(saved["heads"]) == 3 and len(saved["model_sha256"]) == 64
    assert len(read_records(tmp_path / "r.jsonl")) == 3
    listing = subprocess.run(
        [sys.executable, "-m", "hoprank", "heads", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert listing.returncode == 0 and "cli-test" in listing.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "hoprank", "heads", "select", "--dataset", "no-such-set", "--name", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "error" in bad.stderr.lower()


def test_icr_heads_benchmark_evaluate_and_crossfit(tmp_path: Path) -> None:
    """benchmarks/icr_heads.py replays selections on recorded scores (no model)."""
    import subprocess
    import sys

    rng = np.random.default_rng(1)
    recs = []
    for q in range(8):
        s = rng.normal(size=(6, 2, 3))
        s[2, 1, 2] += 10.0  # one head always finds the relevant passage
        ids = [f"d{i}" for i in range(6)]
        recs.append(HeadRecord(dataset="toy", qid=str(q), doc_ids=ids, qrels={"d2": 2}, scores=s))
    write_records(recs, tmp_path / "r.jsonl")
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "icr_heads.py"
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            "crossfit",
            "--records",
            str(tmp_path / "r.jsonl"),
            "--dataset",
            "toy",
            "--k",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout[out.stdout.index("{") :])
    assert summary["queries"] == 8 and summary["ICR heads, 2-fold on toy (k=1)"] == pytest.approx(1.0)
    assert "heads [(1, 2)]" in out.stdout
