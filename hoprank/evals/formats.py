"""Loaders for published benchmark formats, all producing a :class:`Dataset`.

* BEIR folders: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``,
  ``qrels/<split>.tsv`` (with a header line).
* HotpotQA official JSON (distractor and fullwiki): a list of ``{_id, question, answer,
  supporting_facts: [[title, sent_id]], context: [[title, [sentences]]], type, level}``.
  Paragraphs become documents (id = title; a ``#<hash>`` suffix if one title carries two
  different texts); the paragraphs of the supporting facts are the gold set; the context
  order becomes run ``context``. In fullwiki files, gold titles missing from the retrieved
  context stay in the gold set and the qrels (id = the title; no document in the corpus,
  so no ranking of the context can reach them) and are listed in
  ``Query.metadata["gold_missing"]``.
* 2WikiMultihopQA (JSON list or JSONL): HotpotQA's layout plus ``evidences``.
* MuSiQue JSONL: ``{id, paragraphs: [{idx, title, paragraph_text, is_supporting}],
  question, question_decomposition, answer, answer_aliases, answerable}``; documents are
  per question (id ``<qid>::<idx>``); ``metadata["hops"]`` from the id prefix (``2hop__``,
  ``3hop1__``, ``4hop3__``: 2, 3, 4), ``metadata["type"]`` the prefix itself.
* MultiHop-RAG: a folder with ``corpus.json`` (articles: title, author, source,
  published_at, category, url, body) and ``MultiHopRAG.json`` (query, answer,
  question_type, evidence_list); articles are documents (id = url), evidence articles
  are the gold set; ``metadata["hops"]`` is the number of evidence articles.

HotpotQA and 2Wiki records get ``metadata["hops"]`` = the number of supporting paragraphs and
keep ``type`` (and ``level``). Their paragraphs are pooled by title into one corpus across
questions (the "pooled" setting); run ``context`` keeps each question's own paragraphs (the
distractor setting). :mod:`hoprank.evals.convert` writes any of them in the common layout.

:func:`load_dataset` detects the format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hoprank.errors import DatasetError
from hoprank.evals.dataset import (
    SAMPLES,
    Dataset,
    Query,
    check_relevance_level,
    declared_relevance_level,
    iter_jsonl,
    load_common,
    read_corpus_jsonl,
    read_queries_jsonl,
    sample_path,
)
from hoprank.runs import Qrels, Run, read_qrels, read_run
from hoprank.types import Document

__all__ = [
    "FORMATS",
    "context_qa_dataset",
    "load_beir",
    "load_context_qa",
    "load_dataset",
    "load_multihop_rag",
    "load_musique",
    "musique_hops",
]

logger = logging.getLogger(__name__)

FORMATS = ("auto", "common", "beir", "hotpotqa", "2wiki", "musique", "multihop-rag")


def iter_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(location, record)`` from a JSON list file or a JSONL file.

    ``location`` is ``file:line`` for JSONL and ``file[record i]`` for a JSON list.
    """
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096).lstrip()
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: file not found") from e
    if head.startswith("["):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise DatasetError(f"{path}[record {i}]: expected an object, got {type(rec).__name__}")
            yield f"{path}[record {i}]", rec
    else:
        for lineno, rec in iter_jsonl(path):
            yield f"{path}:{lineno}", rec


def _req(where: str, rec: dict[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
    if key not in rec:
        raise DatasetError(f"{where}: missing field {key!r}")
    v = rec[key]
    if not isinstance(v, typ):
        raise DatasetError(f"{where}: field {key!r} has type {type(v).__name__}")
    return v


class _TitleIds:
    """Title-keyed document ids, disambiguated when one title carries different texts."""

    def __init__(self) -> None:
        self.corpus: dict[str, Document] = {}

    def add(self, title: str, text: str) -> str:
        doc = self.corpus.get(title)
        if doc is None or doc.text == text:
            did = title
        else:
            did = f"{title}#{hashlib.sha1(text.encode()).hexdigest()[:8]}"
            doc = self.corpus.get(did)
            if doc is not None and doc.text != text:  # pragma: no cover - sha1 prefix collision
                raise DatasetError(f"document id collision for title {title!r}")
        if did not in self.corpus:
            self.corpus[did] = Document(id=did, title=title, text=text)
        return did


def load_context_qa(path: str | os.PathLike[str], *, name: str | None = None) -> Dataset:
    """HotpotQA (distractor/fullwiki) or 2WikiMultihopQA records (see the module docstring)."""
    p = Path(path)
    return context_qa_dataset(iter_records(p), name=name or p.stem, source=str(p))


def _context_paragraphs(where: str, context: list[Any], ids: _TitleIds) -> tuple[dict[str, str], list[str]]:
    """Add a record's ``[title, [sentences]]`` paragraphs to the corpus; their ids by
    title, and the ids in context order (each once)."""
    title_to_id: dict[str, str] = {}
    order: list[str] = []
    for j, para in enumerate(context):
        if (
            not isinstance(para, list)
            or len(para) != 2
            or not isinstance(para[0], str)
            or not isinstance(para[1], list)
            or not all(isinstance(s, str) for s in para[1])
        ):
            raise DatasetError(f"{where}: context[{j}] must be [title, [sentences]]")
        title, sents = para
        did = ids.add(title, "".join(sents))
        title_to_id[title] = did
        if did not in order:
            order.append(did)
    return title_to_id, order


def context_qa_dataset(records: Iterable[tuple[str, dict[str, Any]]], *, name: str, source: str) -> Dataset:
    """Build a dataset from HotpotQA-layout records given as ``(location, record)``."""
    ids = _TitleIds()
    queries: dict[str, Query] = {}
    qrels: Qrels = {}
    run: Run = {}
    for where, rec in records:
        qid = str(_req(where, rec, "_id", (str, int)))
        question = _req(where, rec, "question", str)
        context = _req(where, rec, "context", list)
        title_to_id, order = _context_paragraphs(where, context, ids)
        facts = rec.get("supporting_facts", [])
        if not isinstance(facts, list) or not all(
            isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) for f in facts
        ):
            raise DatasetError(f"{where}: supporting_facts must be a list of [title, sentence_id]")
        gold_titles = list(dict.fromkeys(f[0] for f in facts))
        missing = [t for t in gold_titles if t not in title_to_id]
        # A gold paragraph the (fullwiki) context lacks stays gold, under its title as id:
        # dropping it would score a retrieval that missed it as complete.
        supporting = [title_to_id.get(t, t) for t in gold_titles]
        answer = rec.get("answer")
        md: dict[str, Any] = {
            k: rec[k] for k in ("type", "level", "supporting_facts", "evidences", "entity_ids") if k in rec
        }
        md["supporting_titles"] = gold_titles
        if gold_titles:
            md["hops"] = len(gold_titles)
        if missing:
            md["gold_missing"] = missing
        if qid in queries:
            raise DatasetError(f"{where}: duplicate question id {qid!r}")
        queries[qid] = Query(
            id=qid,
            text=question,
            answers=[answer] if isinstance(answer, str) else [],
            supporting=supporting,
            metadata=md,
        )
        if facts:
            qrels[qid] = {d: int(d in supporting) for d in order} | {t: 1 for t in missing}
        n = len(order)
        run[qid] = [(d, float(n - i)) for i, d in enumerate(order)]
    if not queries:
        raise DatasetError(f"{source}: no records")
    return Dataset(
        name=name, corpus=ids.corpus, queries=queries, qrels=qrels, runs={"context": run}, source=source
    )


def load_musique(path: str | os.PathLike[str], *, name: str | None = None) -> Dataset:
    """MuSiQue JSONL (answerable or full); documents are per question: ``<qid>::<idx>``."""
    p = Path(path)
    corpus: dict[str, Document] = {}
    queries: dict[str, Query] = {}
    qrels: Qrels = {}
    run: Run = {}
    for where, rec in iter_records(p):
        qid = str(_req(where, rec, "id", (str, int)))
        question = _req(where, rec, "question", str)
        paras = _req(where, rec, "paragraphs", list)
        order: list[str] = []
        gold: list[str] = []
        for j, para in enumerate(paras):
            if not isinstance(para, dict):
                raise DatasetError(f"{where}: paragraphs[{j}] must be an object")
            idx = para.get("idx", j)
            text = _req(f"{where} paragraphs[{j}]", para, "paragraph_text", str)
            did = f"{qid}::{idx}"
            corpus[did] = Document(id=did, title=para.get("title") or None, text=text)
            order.append(did)
            if para.get("is_supporting"):
                gold.append(did)
        answer = rec.get("answer")
        aliases = rec.get("answer_aliases") or []
        answers = ([answer] if isinstance(answer, str) else []) + [a for a in aliases if isinstance(a, str)]
        md: dict[str, Any] = {k: rec[k] for k in ("question_decomposition", "answerable") if k in rec}
        hops = musique_hops(qid, rec.get("question_decomposition"))
        if hops is not None:
            md["hops"] = hops
            md["type"] = qid.split("__", 1)[0] if "__" in qid else f"{hops}hop"
        if qid in queries:
            raise DatasetError(f"{where}: duplicate question id {qid!r}")
        queries[qid] = Query(id=qid, text=question, answers=answers, supporting=gold, metadata=md)
        qrels[qid] = {d: int(d in gold) for d in order}
        run[qid] = [(d, float(len(order) - i)) for i, d in enumerate(order)]
    if not queries:
        raise DatasetError(f"{p}: no records")
    return Dataset(
        name=name or p.stem, corpus=corpus, queries=queries, qrels=qrels, runs={"context": run}, source=str(p)
    )


_MUSIQUE_HOPS = re.compile(r"^(\d+)hop")


def musique_hops(qid: str, decomposition: Any = None) -> int | None:
    """A MuSiQue question's hop count: the digit of its id prefix (``2hop__``, ``3hop1__``,
    ``4hop3__``...), else the length of ``question_decomposition``, else None."""
    m = _MUSIQUE_HOPS.match(qid)
    if m:
        return int(m.group(1))
    return len(decomposition) if isinstance(decomposition, list) and decomposition else None


def load_multihop_rag(path: str | os.PathLike[str], *, name: str | None = None) -> Dataset:
    """A MultiHop-RAG folder (``corpus.json`` + ``MultiHopRAG.json``); documents are articles."""
    d = Path(path)
    corpus: dict[str, Document] = {}
    for where, rec in iter_records(d / "corpus.json"):
        url = _req(where, rec, "url", str)
        body = _req(where, rec, "body", str)
        md: dict[str, Any] = {
            k: rec[k] for k in ("author", "source", "published_at", "category", "url") if k in rec
        }
        corpus[url] = Document(id=url, title=rec.get("title") or None, text=body, metadata=md)
    qfile = d / "MultiHopRAG.json"
    queries: dict[str, Query] = {}
    qrels: Qrels = {}
    for i, (where, rec) in enumerate(iter_records(qfile)):
        qid = str(rec.get("id", i))
        question = _req(where, rec, "query", str)
        evidence = _req(where, rec, "evidence_list", list)
        urls: list[str] = []
        for j, ev in enumerate(evidence):
            if not isinstance(ev, dict) or not isinstance(ev.get("url"), str):
                raise DatasetError(f"{where}: evidence_list[{j}] needs a 'url'")
            if ev["url"] not in urls:
                urls.append(ev["url"])
        unknown = [u for u in urls if u not in corpus]
        if unknown:
            raise DatasetError(f"{where}: evidence articles not in corpus.json: {unknown}")
        answer = rec.get("answer")
        queries[qid] = Query(
            id=qid,
            text=question,
            answers=[answer] if isinstance(answer, str) else [],
            supporting=urls,
            metadata={
                "question_type": rec.get("question_type"),
                "evidence_list": evidence,
                "hops": len(urls),
            },
        )
        if urls:
            qrels[qid] = dict.fromkeys(urls, 1)
    return Dataset(name=name or d.name, corpus=corpus, queries=queries, qrels=qrels, source=str(d))


def load_beir(path: str | os.PathLike[str], *, split: str = "test", name: str | None = None) -> Dataset:
    """A BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""
    d = Path(path)
    corpus = read_corpus_jsonl(d / "corpus.jsonl", id_keys=("_id",))
    queries = read_queries_jsonl(d / "queries.jsonl", id_keys=("_id",))
    qrels = read_qrels(d / "qrels" / f"{split}.tsv")
    queries = {q: v for q, v in queries.items() if q in qrels}  # BEIR ships all splits' queries
    runs: dict[str, Run] = {}
    for rp in sorted(d.glob("run.*")):
        runs[rp.name.split(".")[1]] = read_run(rp)
    return Dataset(name=name or d.name, corpus=corpus, queries=queries, qrels=qrels, runs=runs, source=str(d))


def _detect_file(p: Path) -> str:
    for _, rec in iter_records(p):
        if "paragraphs" in rec and "question" in rec:
            return "musique"
        if "context" in rec and "question" in rec:
            return "2wiki" if "evidences" in rec else "hotpotqa"
        break
    raise DatasetError(f"{p}: cannot tell the format (expected HotpotQA, 2WikiMultihopQA or MuSiQue records)")


def detect_format(path: Path) -> str:
    """The format name of a folder or file (see :data:`FORMATS`)."""
    if path.is_file():
        return _detect_file(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: no such dataset file or folder")
    if (path / "MultiHopRAG.json").is_file() and (path / "corpus.json").is_file():
        return "multihop-rag"
    if (path / "qrels").is_dir() and (path / "corpus.jsonl").is_file():
        return "beir"
    if (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file():
        return "common"
    raise DatasetError(
        f"{path}: not a known dataset layout (common: corpus.jsonl + queries.jsonl + qrels.tsv; "
        "BEIR: + qrels/<split>.tsv; MultiHop-RAG: corpus.json + MultiHopRAG.json)"
    )


def load_dataset(
    spec: str | os.PathLike[str],
    *,
    format: str = "auto",
    name: str | None = None,
    qrels: str | os.PathLike[str] | None = None,
    runs: dict[str, str | os.PathLike[str]] | None = None,
    split: str = "test",
    relevance_level: int | None = None,
) -> Dataset:
    """Load a dataset from a shipped sample name, a folder or a file.

    ``qrels`` replaces the judgments and ``runs`` adds first-stage runs (TREC files).
    ``relevance_level`` sets the binary-relevance threshold (default: the dataset's own,
    see :mod:`hoprank.evals.dataset`).
    """
    if format not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; known: {', '.join(FORMATS)}")
    if relevance_level is not None:
        check_relevance_level(relevance_level, "")
    key = os.fspath(spec)
    if key in SAMPLES:
        ds = load_common(sample_path(key), name=name or key)
    else:
        p = Path(key).expanduser()
        fmt = detect_format(p) if format == "auto" else format
        if fmt == "common":
            ds = load_common(p, name=name)
        elif fmt == "beir":
            ds = load_beir(p, split=split, name=name)
        elif fmt in ("hotpotqa", "2wiki"):
            ds = load_context_qa(p, name=name)
        elif fmt == "musique":
            ds = load_musique(p, name=name)
        else:
            ds = load_multihop_rag(p, name=name)
    if qrels is not None:
        ds.qrels = read_qrels(qrels)
    for rname, rpath in (runs or {}).items():
        ds.runs[rname] = read_run(rpath)
    if relevance_level is not None:
        ds.set_relevance_level(relevance_level, "argument")
    elif qrels is not None:
        level, source = declared_relevance_level(ds.meta, ds.qrels, os.fspath(qrels))
        ds.set_relevance_level(level, source)
    if qrels is not None or runs:
        ds.__dict__.pop("content_hash", None)
    return ds
