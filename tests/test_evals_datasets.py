"""Dataset loaders: the common layout on the real shared data, published formats on small
fixtures (tests/fixtures/evals/README.md), TREC files, errors with file and line."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from hoprank.errors import DatasetError
from hoprank.evals import SAMPLES, load_dataset, read_qrels, read_run, sample_path, write_run
from hoprank.evals.dataset import dataset_conventions
from hoprank.evals.formats import detect_format

FIX = Path(__file__).parent / "fixtures" / "evals"


@pytest.mark.parametrize(
    ("folder", "docs", "queries", "qrels", "runs", "level"),
    [
        ("trec-dl-2019-passage", 4297, 43, 9260, {"bm25": 4300}, 2),
        ("hotpotqa-dev-distractor-500", 4858, 500, 4931, {"distractor": 4931}, 1),
        ("noveleval-2306", 420, 21, 420, {"initial": 420}, 1),
        ("multihop-rag-facts-500", 438, 500, 1153, {}, 1),
    ],
)
def test_common_layout_on_shared_data(datasets_dir: Path, folder, docs, queries, qrels, runs, level) -> None:
    ds = load_dataset(datasets_dir / folder)
    s = ds.summary()
    assert (s["docs"], s["queries"], s["qrels"], s["runs"], s["relevance_level"]) == (
        docs,
        queries,
        qrels,
        runs,
        level,
    )
    assert len(s["hash"]) == 16


def test_hotpotqa_common_fields(datasets_dir: Path) -> None:
    ds = load_dataset(datasets_dir / "hotpotqa-dev-distractor-500")
    q = ds.queries["5a8c7595554299585d9e36b6"]
    assert q.answers == ["Chief of Protocol"]
    assert [ds.corpus[d].title for d in q.supporting] == ["Shirley Temple", "Kiss and Tell (1945 film)"]
    assert len(q.metadata["candidates"]) == 10
    cands = ds.candidates(q.id, ds.run(), depth=4)
    assert [d.id for d in cands] == q.metadata["candidates"][:4]
    assert [d.score for d in cands] == [10.0, 9.0, 8.0, 7.0]
    assert ds.gold(q.id) == set(q.supporting)


def test_content_hash_is_stable_and_content_sensitive(datasets_dir: Path, tmp_path: Path) -> None:
    src = datasets_dir / "noveleval-2306"
    a = load_dataset(src)
    assert load_dataset(src).content_hash == a.content_hash
    copy = tmp_path / "noveleval-2306"
    shutil.copytree(src, copy)
    lines = (copy / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (copy / "corpus.jsonl").chmod(0o644)
    (copy / "corpus.jsonl").write_text("".join(reversed(lines)), encoding="utf-8")  # order does not matter
    assert load_dataset(copy).content_hash == a.content_hash
    rec = json.loads(lines[0])
    rec["text"] += " (edited)"
    (copy / "corpus.jsonl").write_text("".join([json.dumps(rec) + "\n", *lines[1:]]), encoding="utf-8")
    assert load_dataset(copy).content_hash != a.content_hash


def test_shipped_samples_resolve_and_match_the_shared_data(datasets_dir: Path) -> None:
    assert set(SAMPLES) == {"sample-dl19", "sample-hotpotqa"}
    dl = load_dataset("sample-dl19")
    full = load_dataset(datasets_dir / "trec-dl-2019-passage")
    assert dl.relevance_level == 2 and len(dl.queries) == 3
    for qid, hits in dl.run("bm25").items():
        assert len(hits) == 20
        assert hits == full.run("bm25")[qid][:20]
        assert dl.qrels[qid] == full.qrels[qid]  # all judgments, for a correct nDCG ideal
        for d, _ in hits:
            assert dl.corpus[d] == full.corpus[d]
    hp = load_dataset("sample-hotpotqa")
    assert len(hp.queries) == 5 and len(hp.corpus) == 50
    assert all(len(h) == 10 for h in hp.run().values())
    assert (sample_path("sample-dl19").parent / "PROVENANCE.md").is_file()


def test_unknown_sample_and_missing_paths() -> None:
    with pytest.raises(DatasetError, match="unknown sample"):
        sample_path("sample-nope")
    with pytest.raises(DatasetError, match="no such dataset"):
        load_dataset("/nonexistent/dataset")


def test_beir_fixture_equals_the_common_layout(datasets_dir: Path) -> None:
    beir = load_dataset(FIX / "beir-mini")
    assert detect_format(FIX / "beir-mini") == "beir"
    assert set(beir.queries) == {"130510", "405717"}  # the query without test qrels is dropped
    full = load_dataset(datasets_dir / "trec-dl-2019-passage")
    for qid in beir.queries:
        assert beir.queries[qid].text == full.queries[qid].text
        assert beir.qrels[qid] == full.qrels[qid]
    for did, doc in beir.corpus.items():
        assert doc.text == full.corpus[did].text and doc.title is None


def test_hotpotqa_official_json() -> None:
    ds = load_dataset(FIX / "hotpot_dev_distractor_mini.json")
    assert detect_format(FIX / "hotpot_dev_distractor_mini.json") == "hotpotqa"
    q = ds.queries["5a8c7595554299585d9e36b6"]
    assert q.supporting == ["Shirley Temple", "Kiss and Tell (1945 film)"]
    assert q.answers == ["Chief of Protocol"]
    run = ds.run("context")[q.id]
    assert len(run) == 10 and run[0][0] == "Meet Corliss Archer"
    assert ds.qrels[q.id]["Shirley Temple"] == 1 and ds.qrels[q.id]["Janet Waldo"] == 0
    assert ds.corpus["Shirley Temple"].text.startswith("Shirley Temple Black (April 23, 1928")


def test_hotpotqa_fullwiki_records_missing_gold() -> None:
    ds = load_dataset(FIX / "hotpot_dev_fullwiki_mini.json")
    q = next(iter(ds.queries.values()))
    # the missing gold paragraph stays gold: recall over the context cannot reach 1
    assert q.supporting == ["Shirley Temple", "Kiss and Tell (1945 film)"]
    assert q.metadata["gold_missing"] == ["Kiss and Tell (1945 film)"]
    assert ds.qrels[q.id]["Kiss and Tell (1945 film)"] == 1
    assert "Kiss and Tell (1945 film)" not in ds.corpus
    assert ds.gold(q.id) == {"Shirley Temple", "Kiss and Tell (1945 film)"}


def test_same_title_with_two_texts_gets_distinct_ids(tmp_path: Path) -> None:
    recs = [
        {
            "_id": "a",
            "question": "q1",
            "answer": "x",
            "supporting_facts": [["T", 0]],
            "context": [["T", ["one."]]],
        },
        {
            "_id": "b",
            "question": "q2",
            "answer": "y",
            "supporting_facts": [["T", 0]],
            "context": [["T", ["two."]]],
        },
    ]
    p = tmp_path / "h.json"
    p.write_text(json.dumps(recs))
    ds = load_dataset(p)
    ida, idb = ds.queries["a"].supporting[0], ds.queries["b"].supporting[0]
    assert ida == "T" and idb.startswith("T#") and ds.corpus[idb].text == "two."


def test_2wiki_and_musique_and_multihop_rag() -> None:
    w = load_dataset(FIX / "2wiki_dev_mini.json")
    q = next(iter(w.queries.values()))
    assert detect_format(FIX / "2wiki_dev_mini.json") == "2wiki"
    assert q.answers == ["Małgorzata Braunek"] and q.supporting == [
        "Polish-Russian War (film)",
        "Xawery Żuławski",
    ]
    assert q.metadata["evidences"][1] == ["Xawery Żuławski", "mother", "Małgorzata Braunek"]

    m = load_dataset(FIX / "musique_ans_dev_mini.jsonl")
    q = m.queries["2hop__460946_294723"]
    assert q.supporting == ["2hop__460946_294723::5", "2hop__460946_294723::10"]
    assert q.metadata["question_decomposition"][0]["answer"] == "Steve Hillage"
    assert m.corpus["2hop__460946_294723::5"].title == "Miquette Giraudy"

    r = load_dataset(FIX / "multihop-rag-mini")
    assert detect_format(FIX / "multihop-rag-mini") == "multihop-rag"
    q = r.queries["0"]
    assert q.answers == ["no"] and len(q.supporting) == 3
    assert all(u in r.corpus for u in q.supporting)
    assert r.qrels["0"] == dict.fromkeys(q.supporting, 1)


# ----------------------------------------------------------------------------- TREC files


def test_trec_qrels_and_run_layouts(tmp_path: Path) -> None:
    (tmp_path / "q4").write_text("q1 0 d1 2\nq1 0 d2 0\n# comment\n\nq2 0 d3 1\n")
    (tmp_path / "q3").write_text("q1\td1\t2\nq1\td2\t0\nq2\td3\t1\n")
    assert (
        read_qrels(tmp_path / "q4")
        == read_qrels(tmp_path / "q3")
        == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    )
    (tmp_path / "r6").write_text("q1 Q0 d1 1 3.5 bm25\nq1 Q0 d3 2 2.0 bm25\nq1 Q0 d2 3 2.0 bm25\n")
    (tmp_path / "r4").write_text("q1\td2\t3\t2.0\nq1\td1\t1\t3.5\nq1\td3\t2\t2.0\n")
    # trec_eval order: score desc, ties by docid desc (d3 before d2), not the rank column
    assert (
        read_run(tmp_path / "r6")
        == read_run(tmp_path / "r4")
        == {"q1": [("d1", 3.5), ("d3", 2.0), ("d2", 2.0)]}
    )
    write_run(tmp_path / "out.trec", {"q1": ["d2", "d1"]}, tag="x")
    assert (tmp_path / "out.trec").read_text() == "q1\tQ0\td2\t1\t2\tx\nq1\tQ0\td1\t2\t1\tx\n"
    assert read_run(tmp_path / "out.trec") == {"q1": [("d2", 2.0), ("d1", 1.0)]}


@pytest.mark.parametrize(
    ("name", "content", "reader", "message"),
    [
        ("qrels.tsv", "q1\td1\t1\nq1\td2\n", read_qrels, r"qrels.tsv:2: expected 3 .* got 2"),
        (
            "qrels.tsv",
            "q1\td1\t1\nq1\td2\thigh\n",
            read_qrels,
            r"qrels.tsv:2: relevance 'high' is not a number",
        ),
        (
            "qrels.tsv",
            "q1 0 d1 1\nq1 d2 1\n",
            read_qrels,
            r"qrels.tsv:2: 3 columns where earlier lines have 4",
        ),
        ("run.tsv", "q1\td1\t1\t2.0\nq1\td2\tx\t1.0\n", read_run, r"run.tsv:2: rank 'x' is not a number"),
        ("run.tsv", "q1\td1\t1\t2.0\n\nq1\td1\t2\t1.0\n", read_run, r"run.tsv:3: document 'd1' listed twice"),
        ("run.tsv", "q1 Q0 d1 1 nan x\n", read_run, r"run.tsv:1: score is NaN"),
        ("run.tsv", "q1 d1 1\n", read_run, r"run.tsv:1: expected 6 .* or 4 .* got 3"),
    ],
)
def test_trec_errors_name_file_and_line(tmp_path: Path, name, content, reader, message) -> None:
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DatasetError, match=message):
        reader(p)


def _common(tmp_path: Path, corpus: str, queries: str = '{"id": "q1", "text": "x"}\n') -> Path:
    d = tmp_path / "ds"
    d.mkdir()
    (d / "corpus.jsonl").write_text(corpus)
    (d / "queries.jsonl").write_text(queries)
    return d


@pytest.mark.parametrize(
    ("corpus", "queries", "message"),
    [
        ('{"id": "a", "text": "t"}\n{"id": "b", "text": "t"\n', None, r"corpus.jsonl:2: invalid JSON"),
        ('{"id": "a", "text": "t"}\n\n{"id": "b"}\n', None, r"corpus.jsonl:3: missing field 'text'"),
        (
            '{"id": "a", "text": "t"}\n{"id": "a", "text": "u"}\n',
            None,
            r"corpus.jsonl:2: duplicate document id 'a'",
        ),
        ('["a", "t"]\n', None, r"corpus.jsonl:1: expected a JSON object"),
        (
            '{"id": "a", "text": "t"}\n',
            '{"id": "q1", "text": "x", "answers": "no"}\n',
            r"queries.jsonl:1: field 'answers'",
        ),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, corpus, queries, message) -> None:
    d = _common(tmp_path, corpus, queries or '{"id": "q1", "text": "x"}\n')
    with pytest.raises(DatasetError, match=message):
        load_dataset(d)


def test_missing_files_and_dangling_run_docs(tmp_path: Path) -> None:
    d = _common(tmp_path, '{"id": "a", "text": "t"}\n')
    (d / "queries.jsonl").unlink()
    with pytest.raises(DatasetError, match="not a known dataset layout"):
        load_dataset(d)
    with pytest.raises(DatasetError, match=r"queries.jsonl"):
        load_dataset(d, format="common")
    (d / "queries.jsonl").write_text('{"id": "q1", "text": "x"}\n')
    (d / "run.bm25.tsv").write_text("q1\ta\t1\t2.0\nq1\tzzz\t2\t1.0\n")
    ds = load_dataset(d)
    with pytest.raises(DatasetError, match="no such document"):
        ds.candidates("q1", ds.run("bm25"))


def test_hotpot_record_errors_name_the_record(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps([{"_id": "a", "question": "q", "context": [["T", "not a list"]]}]))
    with pytest.raises(DatasetError, match=r"bad.json\[record 0\]: context\[0\]"):
        load_dataset(p, format="hotpotqa")
    p2 = tmp_path / "bad.jsonl"
    p2.write_text('{"id": "x", "question": "q", "paragraphs": []}\n{"id": "y", "paragraphs": []}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: missing field 'question'"):
        load_dataset(p2, format="musique")


def test_package_data_is_in_the_wheel(tmp_path: Path) -> None:
    """hatchling must ship hoprank/data/* (checked on a real wheel build)."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 and "hatchling" in proc.stderr:
        pytest.skip("hatchling not installed in this environment")
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("hoprank-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for sample in SAMPLES:
        for f in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
            assert f"hoprank/data/{sample}/{f}" in names
    assert "hoprank/data/PROVENANCE.md" in names


def test_relevance_level_from_dataset_json_argument_and_known_qrels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The level is declared (argument, dataset.json, known qrels content), never read from a
    folder or dataset name; graded qrels with nothing declared get 1 and a warning."""
    src = sample_path("sample-dl19")
    copy = tmp_path / "my-passages"
    shutil.copytree(src, copy)
    ds = load_dataset(copy)
    assert (ds.relevance_level, ds.relevance_source) == (2, "dataset.json")
    (copy / "dataset.json").unlink()
    ds = load_dataset(copy)  # the same judgments in another folder: same level, by content
    assert (ds.relevance_level, ds.relevance_source) == (2, "known:sample-dl19")
    # one grade changed: no longer the published set; the name does not count either
    lines = (copy / "qrels.tsv").read_text().splitlines()
    qid, did, *_, rel = lines[0].split()
    lines[0] = f"{qid}\t{did}\t{3 if rel != '3' else 2}"
    (copy / "qrels.tsv").write_text("\n".join(lines) + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hoprank.evals.dataset"):
        ds = load_dataset(copy, name="trec-dl-2020-dl19")
    assert (ds.relevance_level, ds.relevance_source) == (1, "default")
    assert "no declared relevance level" in caplog.text
    ds = load_dataset(copy, relevance_level=3)
    assert (ds.relevance_level, ds.relevance_source) == (3, "argument")
    assert ds.summary()["relevance_source"] == "argument"
    assert dataset_conventions(ds) == {"relevance_level": 3, "relevance_source": "argument"}
    ds.relevance_level = 2  # assigned directly: the recorded source no longer applies
    assert ds.summary()["relevance_source"] == "set by caller"
    ds.set_relevance_level(2, "flag")
    assert ds.subset(list(ds.queries)[:1]).summary()["relevance_source"] == "flag"
    (copy / "dataset.json").write_text('{"relevance_level": 2, "format": "trec"}')
    ds = load_dataset(copy, relevance_level=1)
    assert (ds.relevance_level, ds.relevance_source, ds.meta) == (1, "argument", {"format": "trec"})
    for bad in ('{"relevance_level": 0}', '{"relevance_level": "2"}', "{oops", "[1]"):
        (copy / "dataset.json").write_text(bad)
        with pytest.raises(DatasetError, match=r"dataset\.json"):
            load_dataset(copy)
    with pytest.raises(DatasetError, match="relevance_level"):
        load_dataset(src, relevance_level=0)


def test_binary_judgments_without_declaration_do_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "plain"
    d.mkdir()
    (d / "corpus.jsonl").write_text('{"id": "d1", "text": "x"}\n')
    (d / "queries.jsonl").write_text('{"id": "q1", "text": "y"}\n')
    (d / "qrels.tsv").write_text("q1\t0\td1\t1\n")
    with caplog.at_level(logging.WARNING, logger="hoprank.evals.dataset"):
        ds = load_dataset(d)
    assert (ds.relevance_level, ds.relevance_source) == (1, "default")
    assert caplog.text == ""


def test_shared_trec_dl_2019_is_level_2_by_content(datasets_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(datasets_dir / "trec-dl-2019-passage")
    assert (ds.relevance_level, ds.relevance_source) == (2, "known:trec-dl-2019-passage")
    renamed = tmp_path / "some-passages"
    renamed.mkdir()
    for f in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        (renamed / f).symlink_to(datasets_dir / "trec-dl-2019-passage" / f)
    assert load_dataset(renamed).relevance_level == 2


def test_run_with_spaced_ids_round_trips_and_bom_is_skipped(tmp_path: Path) -> None:
    """HotpotQA title ids hold spaces: write_run/read_run keep them whole."""
    ids = ["Kiss and Tell (1945 film)", "Shirley Temple", "d3"]
    write_run(tmp_path / "r.trec", {"q 1": ids})
    assert [d for d, _ in read_run(tmp_path / "r.trec")["q 1"]] == ids
    for bad in ("a\tb", " lead", "line\nbreak", ""):
        with pytest.raises(DatasetError, match="cannot be written"):
            write_run(tmp_path / "x.trec", {"q1": [bad]})
    assert not (tmp_path / "x.trec").exists()
    (tmp_path / "bom.tsv").write_text("\ufeffq1\td1\t1\n", encoding="utf-8")
    assert read_qrels(tmp_path / "bom.tsv") == {"q1": {"d1": 1}}
    (tmp_path / "sp.tsv").write_text("q1\tA title\t1\nq1\tother\t0\n", encoding="utf-8")
    assert read_qrels(tmp_path / "sp.tsv") == {"q1": {"A title": 1, "other": 0}}
