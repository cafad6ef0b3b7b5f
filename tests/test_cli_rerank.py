"""``hoprank rerank`` end to end on DL19: JSONL in, ranked JSONL or tables out, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hoprank.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture(scope="module")
def dl19_items(datasets_dir: Path) -> list[dict[str, object]]:
    """Two DL19 queries with their BM25 top-6 passages, in the rerank input format."""
    d = datasets_dir / "trec-dl-2019-passage"
    queries = [json.loads(line) for line in (d / "queries.jsonl").open(encoding="utf-8")][:2]
    run: dict[str, list[str]] = {}
    for line in (d / "run.bm25.tsv").open():
        qid, docid = line.split("\t")[:2]
        run.setdefault(qid, []).append(docid)
    wanted = {docid for q in queries for docid in run[q["id"]][:6]}
    corpus = {}
    for line in (d / "corpus.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        if r["id"] in wanted:
            corpus[r["id"]] = r
    return [
        {
            "id": q["id"],
            "query": q["text"],
            "documents": [{"id": i, "text": corpus[i]["text"]} for i in run[q["id"]][:6]],
        }
        for q in queries
    ]


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_items_file_json_output(dl19_items: list[dict[str, object]], tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", list(dl19_items))
    res = runner.invoke(app, ["rerank", str(src), "--ranker", "identity", "--json", "--top-k", "4"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["query_id"] for x in lines] == [it["id"] for it in dl19_items]
    for rec, item in zip(lines, dl19_items, strict=True):
        docs = item["documents"]
        assert isinstance(docs, list)
        assert [r["id"] for r in rec["results"]] == [d["id"] for d in docs[:4]]
        assert [r["rank"] for r in rec["results"]] == [1, 2, 3, 4]
        assert [r["index"] for r in rec["results"]] == [0, 1, 2, 3]
        assert rec["results"][0]["text"] == docs[0]["text"] and rec["score_kind"] == "rank"


def test_query_option_with_documents_on_stdin(dl19_items: list[dict[str, object]]) -> None:
    docs = dl19_items[0]["documents"]
    assert isinstance(docs, list)
    stdin = "".join(json.dumps(d["text"] if i % 2 else d) + "\n\n" for i, d in enumerate(docs))
    res = runner.invoke(
        app, ["rerank", "-", "--query", "what is it", "-r", "identity", "--json"], input=stdin
    )
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert "query_id" not in rec and rec["query"] == "what is it"
    # objects keep their id, bare strings get their position
    assert [r["id"] for r in rec["results"]] == [
        d["id"] if i % 2 == 0 else str(i) for i, d in enumerate(docs)
    ]


def test_table_output(dl19_items: list[dict[str, object]], tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", dl19_items[:1])
    res = runner.invoke(app, ["rerank", str(src), "-r", "identity"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "rank" in res.stdout and "identity" in res.stdout
    docs = dl19_items[0]["documents"]
    assert isinstance(docs, list) and docs[0]["id"] in res.stdout


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["-r", "identity"], '{"query": "q", "documents": ["a"]}\n{oops\n', "<stdin>:2: invalid JSON"),
        (["-r", "identity"], '{"documents": ["a"]}\n', "'query'"),
        (["-r", "identity"], '{"query": "q", "documents": [{"title": "t"}]}\n', "'text'"),
        (
            ["-r", "identity"],
            '{"query": "q", "documents": [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]}\n',
            "duplicate",
        ),
        (["-r", "nope"], '{"query": "q", "documents": ["a"]}\n', "unknown ranker"),
        (["-r", "identity", "-p", "oops"], '{"query": "q", "documents": ["a"]}\n', "key=value"),
        (["-r", "identity", "-q", " "], '"a"\n', "--query"),
        (["/no/such/file.jsonl", "-r", "identity"], "", "not found"),
    ],
)
def test_bad_input_exits_2(args: list[str], stdin: str, message: str) -> None:
    res = runner.invoke(app, ["rerank", *args], input=stdin)
    assert res.exit_code == 2, res.output
    assert message in res.stderr


def test_engine_failure_exits_1(tmp_path: Path) -> None:
    """A folder that fails to load as a model is an engine failure (a name that is no
    model at all is exit 2, tests/test_cli_errors.py)."""
    res = runner.invoke(
        app,
        ["rerank", "-r", "first", "-m", str(tmp_path)],
        input='{"query": "q", "documents": ["a", "b"]}\n',
    )
    assert res.exit_code == 1, res.output
    assert "engine error" in res.stderr


def test_real_first_on_smollm2_subprocess(dl19_items: list[dict[str, object]], tmp_path: Path) -> None:
    item = dict(dl19_items[0])
    docs = item["documents"]
    assert isinstance(docs, list)
    item["documents"] = docs[:5]
    src = _write(tmp_path / "in.jsonl", [item])
    cmd = [
        sys.executable,
        "-m",
        "hoprank",
        "rerank",
        str(src),
        "--ranker",
        "first",
        "--model",
        "smollm2-135m",
    ]
    cmd += ["--json", "--top-k", "3", "--threads", "2", "-p", "max_passage_tokens=60"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads(proc.stdout)
    ids = [r["id"] for r in rec["results"]]
    assert len(ids) == 3 and len(set(ids)) == 3 and set(ids) <= {d["id"] for d in docs[:5]}
    assert [r["index"] for r in rec["results"]] == [[d["id"] for d in docs[:5]].index(i) for i in ids]
    assert rec["ranker"] == "first" and rec["usage"]["llm_calls"] >= 1 and rec["usage"]["prompt_tokens"] > 100
    scores = [r["score"] for r in rec["results"]]
    assert scores == sorted(scores, reverse=True)
