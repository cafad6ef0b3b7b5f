"""Corpus/queries/run loading on the real datasets, the RunRetriever, and typed errors
for bad files (missing, malformed line, duplicate ids)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hoprank.errors import DatasetError, HoprankError, InvalidInput, RetrievalError
from hoprank.tools import BM25Retriever, DenseRetriever, RunRetriever, load_corpus, load_queries, read_run

HOTPOT = "hotpotqa-dev-distractor-500"
DL19 = "trec-dl-2019-passage"


def test_load_real_corpus(datasets_dir: Path) -> None:
    docs = load_corpus(datasets_dir / HOTPOT / "corpus.jsonl")
    assert len(docs) == 4858
    assert len({d.id for d in docs}) == 4858
    first = docs[0]
    assert first.id == "hpdev-00000" and first.title == "Meet Corliss Archer"
    assert first.text.startswith("Meet Corliss Archer, a program")
    assert load_corpus(datasets_dir / HOTPOT / "corpus.jsonl", limit=7)[-1].id == docs[6].id


def test_extra_fields_go_to_metadata(datasets_dir: Path) -> None:
    line = (datasets_dir / DL19 / "corpus.jsonl").open(encoding="utf-8").readline()
    raw = json.loads(line)
    doc = load_corpus(datasets_dir / DL19 / "corpus.jsonl", limit=1)[0]
    assert doc.id == str(raw["id"]) and doc.text == raw["text"]
    assert set(doc.metadata) == set(raw) - {"id", "text", "title"}


def test_missing_corpus_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "corpus.jsonl"
    with pytest.raises(DatasetError, match=str(missing)):
        load_corpus(missing)
    with pytest.raises(DatasetError, match="not found"):
        BM25Retriever.from_jsonl(missing)
    with pytest.raises(DatasetError):
        DenseRetriever.from_jsonl(missing)


def _copy_head(src: Path, dst: Path, n: int) -> list[str]:
    with src.open(encoding="utf-8") as f:
        lines = [next(f) for _ in range(n)]
    dst.write_text("".join(lines), encoding="utf-8")
    return lines


def test_malformed_line_names_file_and_line(datasets_dir: Path, tmp_path: Path) -> None:
    p = tmp_path / "corpus.jsonl"
    lines = _copy_head(datasets_dir / HOTPOT / "corpus.jsonl", p, 5)
    lines[3] = lines[3][: len(lines[3]) // 2] + "\n"  # truncated JSON on line 4
    p.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:4: invalid JSON"):
        load_corpus(p)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ('{"title": "t", "text": "x"}', "no 'id'"),
        ('{"id": "a", "title": "t"}', "no string 'text'"),
        ("[1]", "object"),
    ],
)
def test_records_missing_fields(tmp_path: Path, record: str, message: str) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "ok", "text": "fine"}\n\n' + record + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=f"c.jsonl:3: .*{message}"):
        load_corpus(p)


def test_duplicate_ids_are_named(datasets_dir: Path, tmp_path: Path) -> None:
    p = tmp_path / "dups.jsonl"
    lines = _copy_head(datasets_dir / HOTPOT / "corpus.jsonl", p, 6)
    p.write_text("".join([*lines, lines[2], lines[4]]), encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"duplicate document ids.*'hpdev-00002', 'hpdev-00004'"):
        load_corpus(p)
    docs = load_corpus(datasets_dir / HOTPOT / "corpus.jsonl", limit=6)
    with pytest.raises(InvalidInput, match="hpdev-00001"):
        BM25Retriever.from_documents([*docs, docs[1]])
    bm = BM25Retriever.from_documents(docs[:3])
    with pytest.raises(InvalidInput, match="hpdev-00002"):
        bm.add(docs[2:4])


def test_load_queries_jsonl_and_tsv(datasets_dir: Path, tmp_path: Path) -> None:
    qs = load_queries(datasets_dir / HOTPOT / "queries.jsonl")
    assert len(qs) == 500
    tsv = tmp_path / "q.tsv"
    tsv.write_text("".join(f"{k}\t{v}\n" for k, v in list(qs.items())[:3]), encoding="utf-8")
    assert load_queries(tsv) == dict(list(qs.items())[:3])


# ----------------------------------------------------------------------------- runs


def test_read_run_4_and_6_columns_agree(datasets_dir: Path, tmp_path: Path) -> None:
    src = datasets_dir / DL19 / "run.bm25.tsv"
    run4 = read_run(src)
    trec = tmp_path / "run.trec"
    with src.open() as f, trec.open("w") as g:
        for line in f:
            qid, docid, rank, score = line.split()
            g.write(f"{qid} Q0 {docid} {rank} {score} bm25\n")
    assert read_run(trec) == run4
    assert len(run4) == 43 and all(len(v) == 100 for v in run4.values())
    for cands in run4.values():
        scores = [s for _, s in cands]
        assert scores == sorted(scores, reverse=True)


def test_read_run_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\td1\t1\t3.0\nq1\td2\t2\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.tsv:2: .*got 3"):
        read_run(bad)
    bad.write_text("q1\td1\tone\t3.0\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.tsv:1"):
        read_run(bad)
    with pytest.raises(DatasetError, match="not found"):
        read_run(tmp_path / "missing.tsv")


@pytest.fixture(scope="module")
def hotpot_run(datasets_dir: Path) -> RunRetriever:
    d = datasets_dir / HOTPOT
    return RunRetriever.from_files(d / "run.distractor.tsv", d / "corpus.jsonl", d / "queries.jsonl")


async def test_run_retriever_serves_distractor_candidates(
    datasets_dir: Path, hotpot_run: RunRetriever
) -> None:
    first = json.loads((datasets_dir / HOTPOT / "queries.jsonl").open(encoding="utf-8").readline())
    by_qid = await hotpot_run.search_by_qid(first["id"], k=10)
    assert [d.id for d in by_qid] == first["candidates"]
    assert [d.metadata["rank"] for d in by_qid] == list(range(1, 11))
    by_text = await hotpot_run.search("  " + first["text"].upper() + " ", k=3)  # whitespace/case-insensitive
    assert [d.id for d in by_text] == first["candidates"][:3]
    assert len(await hotpot_run.search(first["text"], k=50)) == 10  # k above the pool: all candidates
    assert set(first["supporting"]) <= {d.id for d in by_qid}


async def test_run_retriever_unknown_query(hotpot_run: RunRetriever) -> None:
    with pytest.raises(RetrievalError, match="query not found"):
        await hotpot_run.search("Who wrote a question that is not in the file?", k=3)
    with pytest.raises(RetrievalError, match="not in the run"):
        await hotpot_run.search_by_qid("no-such-qid", k=3)
    with pytest.raises(InvalidInput):
        await hotpot_run.search_by_qid(hotpot_run.qids[0], k=0)


def test_run_retriever_dl19_and_missing_docs(datasets_dir: Path, tmp_path: Path) -> None:
    d = datasets_dir / DL19
    r = RunRetriever.from_files(d / "run.bm25.tsv", d / "corpus.jsonl", d / "queries.jsonl")
    qid = r.qids[0]
    top = r.search_by_qid_sync(qid, 5)
    assert len(top) == 5 and top[0].score is not None and top[0].score >= top[-1].score  # type: ignore[operator]
    # A corpus lacking a run document is a dataset error naming it.
    small = tmp_path / "corpus.jsonl"
    lines = (d / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    small.write_text("".join(line for line in lines if json.loads(line)["id"] != top[0].id), encoding="utf-8")
    with pytest.raises(DatasetError, match=f"not in the corpus: '{top[0].id}'"):
        RunRetriever.from_files(d / "run.bm25.tsv", small)
    no_queries = RunRetriever.from_files(d / "run.bm25.tsv", d / "corpus.jsonl")
    with pytest.raises(HoprankError, match="no queries file"):
        no_queries.search_sync("anything", 3)


def test_run_ties_follow_trec_eval(tmp_path: Path) -> None:
    """A replayed run and its evaluation read one order: ties by docid descending."""
    from hoprank.evals import read_run as evals_read_run

    f = tmp_path / "tie.tsv"
    f.write_text("q1\ta\t1\t2.0\nq1\tb\t2\t2.0\nq1\tc\t3\t1.0\n", encoding="utf-8")
    assert read_run(f) == evals_read_run(f) == {"q1": [("b", 2.0), ("a", 2.0), ("c", 1.0)]}
