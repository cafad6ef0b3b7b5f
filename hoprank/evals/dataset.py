"""The in-memory evaluation dataset and the loader of hoprank's common folder layout.

Common layout (the one of ``shared/datasets`` and of the shipped samples)::

    corpus.jsonl     {"id", "title", "text", ...}       extra keys -> Document.metadata
    queries.jsonl    {"id", "text", ...}                answer/answers/supporting -> Query
    qrels.tsv        qid <TAB> docid <TAB> rel           (3 or 4 TREC columns accepted)
    run.<name>.tsv   qid <TAB> docid <TAB> rank <TAB> score   (or 6-column TREC)
    dataset.json     {"relevance_level": 2}              optional; see below

The binary-relevance threshold (``Dataset.relevance_level``) is declared, never guessed from
a folder name. It comes from, in order (``Dataset.relevance_source`` says which):

1. ``load_dataset``'s ``relevance_level`` argument (``--relevance-level``): ``"argument"``;
2. the folder's ``dataset.json`` (``{"relevance_level": 2}``): ``"dataset.json"``;
3. :data:`KNOWN_QRELS`, a table of published judgment sets keyed by :func:`qrels_hash` (the
   sha256 of the sorted ``qid, docid, grade`` triples, so independent of the folder, file
   layout, corpus and runs): ``"known:<name>"`` — e.g. the shared ``trec-dl-2019-passage``
   folder, which has no ``dataset.json``, is TREC DL (level 2) by its qrels' content;
4. else 1 (``"default"``), with a logged warning when the qrels are graded (a grade > 1),
   since graded sets often count only grades >= 2 as relevant.

Every malformed line raises :class:`~hoprank.errors.DatasetError` naming file and line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hoprank._fsio import iter_jsonl
from hoprank.errors import DatasetError
from hoprank.runs import Qrels, Run, read_qrels, read_run
from hoprank.types import Document

__all__ = [
    "KNOWN_QRELS",
    "SAMPLES",
    "Dataset",
    "Query",
    "dataset_conventions",
    "iter_jsonl",
    "load_common",
    "qrels_hash",
    "read_dataset_meta",
    "sample_path",
]

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SAMPLES: dict[str, str] = {
    "sample-dl19": "3 TREC DL 2019 passage queries, BM25 top-20 each, full NIST qrels",
    "sample-hotpotqa": "5 HotpotQA dev (distractor) questions with their 10 paragraphs",
}


class Query(BaseModel):
    """One evaluation question. ``supporting`` lists gold doc ids (multi-hop QA)."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    answers: list[str] = Field(default_factory=list)
    supporting: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Dataset:
    """A corpus, queries, relevance judgments and first-stage runs.

    ``relevance_level`` is the minimum grade that counts as relevant for binary metrics
    (MRR, recall, MAP, support recall); nDCG always uses the graded labels. It is declared
    (see the module docstring); ``relevance_source`` records where it came from. Set it with
    :meth:`set_relevance_level` so the source follows.
    """

    name: str
    corpus: dict[str, Document]
    queries: dict[str, Query]
    qrels: Qrels = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)
    source: str = ""
    relevance_level: int = 1
    relevance_source: str = "default"
    meta: dict[str, Any] = field(default_factory=dict)
    _source_level: int = field(default=1, init=False, repr=False, compare=False)

    def set_relevance_level(self, level: int, source: str = "argument") -> None:
        """Set the binary-relevance threshold and record where it came from."""
        self.relevance_level = check_relevance_level(level, "")
        self.relevance_source = source
        self._source_level = self.relevance_level

    @property
    def declared_relevance_source(self) -> str:
        """``relevance_source``, or ``"set by caller"`` when ``relevance_level`` was assigned
        directly after loading (the source no longer describes it)."""
        return self.relevance_source if self.relevance_level == self._source_level else "set by caller"

    def __post_init__(self) -> None:
        self._source_level = self.relevance_level

    @cached_property
    def content_hash(self) -> str:
        """sha256 (first 16 hex digits) of the canonical content: stable across formats,
        file order and whitespace; changes with any text, judgment or run entry."""
        h = hashlib.sha256()

        def put(obj: Any) -> None:
            h.update(json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
            h.update(b"\n")

        for did in sorted(self.corpus):
            d = self.corpus[did]
            put(["d", d.id, d.title or "", d.text])
        for qid in sorted(self.queries):
            q = self.queries[qid]
            put(["q", q.id, q.text, q.answers, sorted(q.supporting)])
        for qid in sorted(self.qrels):
            put(["r", qid, sorted(self.qrels[qid].items())])
        for name in sorted(self.runs):
            for qid in sorted(self.runs[name]):
                put(["run", name, qid, [[d, round(s, 6)] for d, s in self.runs[name][qid]]])
        return h.hexdigest()[:16]

    def run(self, name: str | None = None) -> Run:
        """A first-stage run by name; with no name, the only run (or ``bm25``)."""
        if name is None:
            if len(self.runs) == 1:
                return next(iter(self.runs.values()))
            if "bm25" in self.runs:
                return self.runs["bm25"]
            raise DatasetError(
                f"dataset {self.name!r} has {len(self.runs)} runs ({sorted(self.runs)}); name one"
            )
        try:
            return self.runs[name]
        except KeyError:
            raise DatasetError(
                f"dataset {self.name!r} has no run {name!r}; runs: {sorted(self.runs)}"
            ) from None

    def candidates(self, qid: str, run: Run, depth: int | None = None) -> list[Document]:
        """The first ``depth`` documents of ``run`` for ``qid``, as Documents with the run score."""
        hits = run.get(qid, [])
        out: list[Document] = []
        for docid, score in hits[:depth] if depth is not None else hits:
            doc = self.corpus.get(docid)
            if doc is None:
                raise DatasetError(
                    f"dataset {self.name!r}: run lists document {docid!r} for query {qid!r}, "
                    "but the corpus has no such document"
                )
            out.append(doc.with_score(score))
        return out

    def query_ids(self, wanted: Sequence[str] | None = None, *, noun: str = "queries") -> list[str]:
        """``wanted`` in its order (:class:`DatasetError` naming ids the dataset lacks), or
        every query id in dataset order."""
        if wanted is None:
            return list(self.queries)
        unknown = [q for q in wanted if q not in self.queries]
        if unknown:
            raise DatasetError(f"dataset {self.name!r} has no {noun} {unknown[:10]}")
        return list(wanted)

    def gold(self, qid: str, relevance_level: int | None = None) -> set[str]:
        """Gold doc ids: the query's ``supporting`` list, else its relevant qrels."""
        q = self.queries.get(qid)
        if q is not None and q.supporting:
            return set(q.supporting)
        level = self.relevance_level if relevance_level is None else relevance_level
        return {d for d, r in self.qrels.get(qid, {}).items() if r >= level}

    def subset(self, query_ids: Iterable[str]) -> Dataset:
        """A dataset restricted to ``query_ids`` (corpus kept whole)."""
        keep = [q for q in query_ids if q in self.queries]
        return Dataset(
            name=self.name,
            corpus=self.corpus,
            queries={q: self.queries[q] for q in keep},
            qrels={q: self.qrels[q] for q in keep if q in self.qrels},
            runs={n: {q: r[q] for q in keep if q in r} for n, r in self.runs.items()},
            source=self.source,
            relevance_level=self.relevance_level,
            relevance_source=self.declared_relevance_source,
            meta=self.meta,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "docs": len(self.corpus),
            "queries": len(self.queries),
            "judged_queries": len(self.qrels),
            "qrels": sum(len(v) for v in self.qrels.values()),
            "runs": {n: sum(len(v) for v in r.values()) for n, r in self.runs.items()},
            "relevance_level": self.relevance_level,
            "relevance_source": self.declared_relevance_source,
            "hash": self.content_hash,
        }


def dataset_conventions(ds: Dataset) -> dict[str, Any]:
    """The conventions a run's metrics depend on, for the manifest and for printing with the
    metrics: ``{"relevance_level", "relevance_source"}`` plus the dataset.json extras
    (format, hop counts...) under ``"meta"`` when present."""
    out: dict[str, Any] = {
        "relevance_level": ds.relevance_level,
        "relevance_source": ds.declared_relevance_source,
    }
    if ds.meta:
        out["meta"] = dict(ds.meta)
    return out


def _str_field(path: Path, lineno: int, obj: dict[str, Any], *keys: str, required: bool = True) -> str:
    for k in keys:
        v = obj.get(k)
        if v is not None:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return str(v)
            if not isinstance(v, str):
                raise DatasetError(f"{path}:{lineno}: field {k!r} must be a string, got {type(v).__name__}")
            return v
    if required:
        raise DatasetError(f"{path}:{lineno}: missing field {' or '.join(repr(k) for k in keys)}")
    return ""


def read_corpus_jsonl(path: Path, *, id_keys: tuple[str, ...] = ("id", "_id")) -> dict[str, Document]:
    """Read ``{"id"|"_id", "title", "text", ...}`` lines into Documents."""
    corpus: dict[str, Document] = {}
    for lineno, obj in iter_jsonl(path):
        did = _str_field(path, lineno, obj, *id_keys)
        text = _str_field(path, lineno, obj, "text")
        title = _str_field(path, lineno, obj, "title", required=False) or None
        if did in corpus:
            raise DatasetError(f"{path}:{lineno}: duplicate document id {did!r}")
        md = {k: v for k, v in obj.items() if k not in (*id_keys, "text", "title")}
        corpus[did] = Document(id=did, text=text, title=title, metadata=md)
    return corpus


def read_queries_jsonl(path: Path, *, id_keys: tuple[str, ...] = ("id", "_id")) -> dict[str, Query]:
    """Read ``{"id", "text", "answer"?, "answers"?, "supporting"?, ...}`` lines into Queries."""
    queries: dict[str, Query] = {}
    for lineno, obj in iter_jsonl(path):
        qid = _str_field(path, lineno, obj, *id_keys)
        text = _str_field(path, lineno, obj, "text", "question", "query")
        answers = obj.get("answers")
        if answers is None:
            answers = [obj["answer"]] if isinstance(obj.get("answer"), str) else []
        supporting = obj.get("supporting") or []
        for name, val in (("answers", answers), ("supporting", supporting)):
            if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
                raise DatasetError(f"{path}:{lineno}: field {name!r} must be a list of strings")
        if qid in queries:
            raise DatasetError(f"{path}:{lineno}: duplicate query id {qid!r}")
        skip = {*id_keys, "text", "question", "query", "answers", "supporting"}
        if isinstance(obj.get("answer"), str) and obj["answer"] in answers:
            skip.add("answer")  # already in answers (the converters write both)
        md = {k: v for k, v in obj.items() if k not in skip}
        queries[qid] = Query(id=qid, text=text, answers=answers, supporting=supporting, metadata=md)
    return queries


def check_relevance_level(level: Any, where: str) -> int:
    """``level`` if it is an integer >= 1, else :class:`DatasetError` naming ``where``."""
    if not isinstance(level, int) or isinstance(level, bool) or level < 1:
        raise DatasetError(f"{where}relevance_level must be an integer >= 1, got {level!r}")
    return level


KNOWN_QRELS: dict[str, tuple[str, int]] = {
    # qrels_hash -> (name, relevance_level). Add an entry only for a published judgment set
    # whose convention is documented by its track; everything else declares it in dataset.json.
    "a5847a267e8fbf7b": ("trec-dl-2019-passage", 2),  # NIST DL19 passage qrels (43 topics, 9,260)
    "afef71bb1c94eee2": ("sample-dl19", 2),  # the shipped 3-query DL19 sample's qrels
}
"""Published judgment sets whose binary-relevance level is their track's documented
convention (TREC DL passage: grade >= 2), keyed by :func:`qrels_hash`. Keyed by content, not
by name, so the same files get the same level in any folder, and a folder named ``dl20``
holding other judgments is not taken for TREC DL."""


def qrels_hash(qrels: Qrels) -> str:
    """sha256 (first 16 hex digits) of the sorted ``qid\tdocid\tgrade`` lines."""
    h = hashlib.sha256()
    for qid in sorted(qrels):
        for did, rel in sorted(qrels[qid].items()):
            h.update(f"{qid}\t{did}\t{rel}\n".encode())
    return h.hexdigest()[:16]


def read_dataset_meta(d: Path) -> dict[str, Any]:
    """The folder's ``dataset.json`` as a dict (``{}`` when absent)."""
    meta = d / "dataset.json"
    if not meta.is_file():
        return {}
    try:
        obj = json.loads(meta.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{meta}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{meta}: expected a JSON object")
    if "relevance_level" in obj:
        check_relevance_level(obj["relevance_level"], f"{meta}: ")
    return obj


def declared_relevance_level(meta: dict[str, Any], qrels: Qrels, where: str) -> tuple[int, str]:
    """``(level, source)`` from dataset.json metadata, the known-qrels table, else 1."""
    if "relevance_level" in meta:
        return int(meta["relevance_level"]), "dataset.json"
    if qrels:
        known = KNOWN_QRELS.get(qrels_hash(qrels))
        if known is not None:
            return known[1], f"known:{known[0]}"
        top = max((r for v in qrels.values() for r in v.values()), default=0)
        if top > 1:
            logger.warning(
                "%s: graded qrels (grades up to %d) but no declared relevance level; binary metrics "
                'count grade >= 1 as relevant. Declare it in dataset.json ({"relevance_level": 2}) '
                "or pass relevance_level / --relevance-level.",
                where,
                top,
            )
    return 1, "default"


def load_common(path: str | os.PathLike[str], *, name: str | None = None) -> Dataset:
    """Load a folder in the common layout (see the module docstring)."""
    d = Path(path)
    if not d.is_dir():
        raise DatasetError(f"{d}: not a dataset folder")
    for required in ("corpus.jsonl", "queries.jsonl"):
        if not (d / required).is_file():
            raise DatasetError(
                f"{d}: missing {required} (common layout: corpus.jsonl, queries.jsonl, qrels.tsv)"
            )
    corpus = read_corpus_jsonl(d / "corpus.jsonl")
    queries = read_queries_jsonl(d / "queries.jsonl")
    qrels = read_qrels(d / "qrels.tsv") if (d / "qrels.tsv").is_file() else {}
    runs: dict[str, Run] = {}
    for rp in sorted(d.glob("run.*.tsv")) + sorted(d.glob("run.*.trec")):
        runs[rp.name.split(".")[1]] = read_run(rp)
    dname = name or d.name
    meta = read_dataset_meta(d)
    level, level_source = declared_relevance_level(meta, qrels, str(d))
    ds = Dataset(
        name=dname,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        runs=runs,
        source=str(d),
        relevance_level=level,
        relevance_source=level_source,
        meta={k: v for k, v in meta.items() if k != "relevance_level"},
    )
    logger.debug("loaded %s: %s", d, ds.summary())
    return ds


def sample_path(name: str) -> Path:
    """The folder of a shipped sample (``sample-dl19``, ``sample-hotpotqa``)."""
    if name not in SAMPLES:
        raise DatasetError(f"unknown sample {name!r}; shipped samples: {', '.join(sorted(SAMPLES))}")
    p = DATA_DIR / name
    if not p.is_dir():
        raise DatasetError(f"sample {name!r} is missing from the installed package ({p})")
    return p
