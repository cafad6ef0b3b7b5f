"""``hoprank index`` on the real HotpotQA corpus: bm25 (full), dense and milvus (first
10 paragraphs, to keep encoding short), JSON summaries, and a clean error exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hoprank.cli import app
from hoprank.tools import BM25Retriever, DenseRetriever, load_index

HOTPOT = "hotpotqa-dev-distractor-500"
runner = CliRunner()


def _index(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["index", *args, "--json"])
    assert result.exit_code == 0, result.output
    summary: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def test_index_bm25_full_corpus(datasets_dir: Path, tmp_path: Path) -> None:
    corpus = datasets_dir / HOTPOT / "corpus.jsonl"
    summary = _index("--corpus", str(corpus), "--kind", "bm25", "--out", str(tmp_path / "bm25"))
    assert summary["documents"] == 4858 and summary["kind"] == "bm25"
    r = load_index(tmp_path / "bm25")
    assert isinstance(r, BM25Retriever) and len(r) == 4858
    hits = r("Shirley Temple Chief of Protocol", 3)
    assert hits[0].id == "hpdev-00001"


@pytest.mark.parametrize("kind", ["dense", "milvus"])
def test_index_dense_and_milvus(datasets_dir: Path, tmp_path: Path, kind: str) -> None:
    pytest.importorskip("sentence_transformers")
    if kind == "milvus":
        pytest.importorskip("milvus_lite")
    corpus = datasets_dir / HOTPOT / "corpus.jsonl"
    out = tmp_path / kind
    summary = _index("--corpus", str(corpus), "--kind", kind, "--out", str(out), "--limit", "10")
    assert summary["documents"] == 10
    r = load_index(out)
    try:
        hits = r.search_sync("Which actress played Corliss Archer?", 2)
        assert {h.id for h in hits} & {"hpdev-00000", "hpdev-00001", "hpdev-00002", "hpdev-00003"}
        if kind == "dense":
            assert isinstance(r, DenseRetriever) and len(r) == 10
    finally:
        close = getattr(r, "close", None)
        if close:
            close()


def test_index_missing_corpus_exits_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["index", "--corpus", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "corpus file not found" in result.output
