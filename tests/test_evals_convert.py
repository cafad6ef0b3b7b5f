"""``hoprank data convert``: published formats -> common layout, round-tripped exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hoprank.cli import app
from hoprank.errors import DatasetError
from hoprank.evals import load_dataset
from hoprank.evals.convert import convert, write_common
from hoprank.evals.qa_metrics import breakdown_by, evaluate_qa, hop_count

FIX = Path(__file__).parent / "fixtures" / "evals"
runner = CliRunner()


@pytest.mark.parametrize(
    ("src", "fmt", "hops"),
    [
        ("hotpot_dev_distractor_mini.json", "hotpotqa", {2}),
        ("hotpot_dev_fullwiki_mini.json", "hotpotqa", {2}),
        ("2wiki_dev_mini.json", "2wiki", {2}),
        ("musique_ans_dev_mini.jsonl", "musique", {2}),
        ("musique_ans_3hop_mini.jsonl", "musique", {3}),
        ("multihop-rag-mini", "multihop-rag", None),
    ],
)
def test_fixture_round_trip(tmp_path: Path, src: str, fmt: str, hops: set[int] | None) -> None:
    out = tmp_path / "out"
    ds = convert(FIX / src, out, format="auto")
    back = load_dataset(out)
    assert back.content_hash == ds.content_hash
    assert (back.relevance_level, back.relevance_source) == (1, "dataset.json")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == fmt and meta["content_hash"] == ds.content_hash
    assert back.meta["format"] == fmt
    for qid, q in ds.queries.items():
        assert back.queries[qid].metadata == q.metadata
        assert back.queries[qid].answers == q.answers and back.queries[qid].supporting == q.supporting
    assert set(back.runs) == set(ds.runs)
    if hops is not None:
        assert {hop_count(q) for q in back.queries.values()} == hops


def test_musique_hops_type_aliases_and_decomposition(tmp_path: Path) -> None:
    ds = convert(FIX / "musique_ans_3hop_mini.jsonl", tmp_path / "m")
    q = load_dataset(tmp_path / "m").queries["3hop1__9991_460946_8817"]
    assert q.metadata["hops"] == 3 and q.metadata["type"] == "3hop1"
    assert q.answers == ["1965", "in 1965"]
    assert [s["question"] for s in q.metadata["question_decomposition"]][1:] == [
        "#1 >> educated at",
        "When was #2 founded?",
    ]
    assert len(q.supporting) == 3 and ds.qrels[q.id][f"{q.id}::3"] == 0
    per = evaluate_qa(
        ds, {q.id: [f"{q.id}::{i}" for i in (3, 0, 1, 2)]}, predictions={q.id: "In 1965."}, ks=(3, 4)
    )
    assert per[q.id]["em"] == 1.0  # matches the alias "in 1965" after normalisation
    assert per[q.id]["passage_recall@3"] == pytest.approx(2 / 3) and per[q.id]["support_recall@4"] == 1.0
    assert breakdown_by(per, ds, "hops")["3"]["n"] == 1


def test_refuses_to_overwrite_and_reports_bad_format(tmp_path: Path) -> None:
    out = tmp_path / "o"
    convert(FIX / "2wiki_dev_mini.json", out)
    with pytest.raises(DatasetError, match="already holds a dataset"):
        convert(FIX / "2wiki_dev_mini.json", out)
    convert(FIX / "2wiki_dev_mini.json", out, overwrite=True, relevance_level=2)
    assert load_dataset(out).relevance_level == 2
    with pytest.raises(DatasetError, match=r"2wiki_dev_mini.json\[record 0\]: missing field 'id'"):
        convert(FIX / "2wiki_dev_mini.json", tmp_path / "x", format="musique")
    assert not (tmp_path / "x").exists()  # loaded before anything is written


def test_shared_hotpotqa_and_multihop_rag_round_trip(datasets_dir: Path, tmp_path: Path) -> None:
    for name in ("hotpotqa-dev-distractor-500", "multihop-rag-facts-500"):
        ds = load_dataset(datasets_dir / name)
        write_common(ds, tmp_path / name, format="common")
        back = load_dataset(tmp_path / name)
        assert back.content_hash == ds.content_hash and len(back.queries) == 500
        assert back.relevance_source == "dataset.json"
        assert all(back.queries[q].metadata == ds.queries[q].metadata for q in ds.queries)


def test_cli_convert_and_info(tmp_path: Path) -> None:
    out = tmp_path / "mus"
    r = runner.invoke(
        app,
        [
            "data",
            "convert",
            "--format",
            "musique",
            str(FIX / "musique_ans_3hop_mini.jsonl"),
            "--out",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["queries"] == 1 and info["hops"] == {"3": 1} and info["types"] == {"3hop1": 1}
    assert (out / "run.context.tsv").is_file() and (out / "qrels.tsv").is_file()
    r = runner.invoke(app, ["data", "info", str(out)])
    assert r.exit_code == 0 and "relevance level 1 (dataset.json)" in r.stdout and "hops: 3: 1" in r.stdout
    r = runner.invoke(app, ["data", "convert", str(FIX / "musique_ans_3hop_mini.jsonl"), "--out", str(out)])
    assert r.exit_code == 2 and "already holds a dataset" in r.output
    r = runner.invoke(app, ["data", "convert", str(tmp_path / "nope.json"), "--out", str(tmp_path / "n")])
    assert r.exit_code == 2 and "error:" in r.output


def test_published_loaders_on_the_shared_sets_rebuilt_in_their_schemas(
    datasets_dir: Path, tmp_path: Path
) -> None:
    """The shared HotpotQA and MultiHop-RAG questions, re-encoded in their published schemas
    (HotpotQA JSON list; MultiHop-RAG corpus.json + MultiHopRAG.json, article bodies = the
    shared evidence facts), convert and keep every question, answer, gold set and type."""
    hp = load_dataset(datasets_dir / "hotpotqa-dev-distractor-500")
    recs = []
    for q in hp.queries.values():
        cands = q.metadata["candidates"]
        recs.append(
            {
                "_id": q.id,
                "question": q.text,
                "answer": q.answers[0],
                "supporting_facts": [[t, 0] for t in q.metadata["supporting_titles"]],
                "context": [[hp.corpus[d].title, [hp.corpus[d].text]] for d in cands],
            }
        )
    (tmp_path / "hotpot.json").write_text(json.dumps(recs))
    ds = convert(tmp_path / "hotpot.json", tmp_path / "hp", format="hotpotqa")
    back = load_dataset(tmp_path / "hp")
    assert len(back.queries) == 500 and back.content_hash == ds.content_hash
    for q in hp.queries.values():
        b = back.queries[q.id]
        assert b.answers == q.answers and b.supporting == q.metadata["supporting_titles"]
        assert [back.corpus[d].text for d in b.supporting] == [hp.corpus[d].text for d in q.supporting]
        assert len(back.runs["context"][q.id]) == len(q.metadata["candidates"])
    assert {hop_count(q) for q in back.queries.values()} == {2}

    mr = load_dataset(datasets_dir / "multihop-rag-facts-500")
    articles: dict[str, dict[str, str]] = {}
    for d in mr.corpus.values():
        url = d.metadata["url"]
        a = articles.setdefault(url, {"title": d.title or "", "url": url, "body": ""})
        a["body"] += d.text + " "
        for k in ("author", "source", "published_at", "category"):
            a[k] = d.metadata[k]
    folder = tmp_path / "mhr-published"
    folder.mkdir()
    (folder / "corpus.json").write_text(json.dumps(list(articles.values())))
    mq = [
        {
            "query": q.text,
            "answer": q.answers[0],
            "question_type": q.metadata["question_type"],
            "evidence_list": q.metadata["evidence_list"],
        }
        for q in mr.queries.values()
    ]
    (folder / "MultiHopRAG.json").write_text(json.dumps(mq))
    ds = convert(folder, tmp_path / "mhr")
    back = load_dataset(tmp_path / "mhr")
    assert back.meta["format"] == "multihop-rag" and len(back.queries) == 500
    for i, q in enumerate(mr.queries.values()):
        b = back.queries[str(i)]
        assert b.text == q.text and b.answers == q.answers
        assert b.supporting == list(dict.fromkeys(q.metadata["supporting_articles"]))
        assert b.metadata["question_type"] == q.metadata["question_type"]
        assert b.metadata["hops"] == len(b.supporting)
    types = breakdown_by({q: {"x": 1.0} for q in back.queries}, back, "question_type")
    assert types["null_query"]["n"] == 71 and sum(v["n"] for v in types.values()) == 500
