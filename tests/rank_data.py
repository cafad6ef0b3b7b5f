"""Ranking data for the ranker tests: a DL19 query with its BM25 top-k, a handcrafted
query with one clearly relevant passage, and synthetic passages with a hidden relevance
(``rel<N>`` in the text) with the label-logprob oracle that reads it."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path

from hoprank.llm.base import Message
from hoprank.types import Document

#: a window line ``[label] ... rel<N>`` of a listwise prompt over :func:`make_docs` passages
LINE = re.compile(r"^\[(\w+)\] .*?rel(\d+)", re.M)


def make_docs(n: int, seed: int = 0, filler: str = "") -> list[Document]:
    """``n`` passages whose hidden relevance ``rel<N>`` is a seeded shuffle of 0..n-1."""
    rels = list(range(n))
    random.Random(seed).shuffle(rels)
    return [Document(id=f"d{i}", text=f"passage {i} {filler}rel{r} end") for i, r in enumerate(rels)]


def rel(d: Document) -> int:
    """The hidden relevance of a :func:`make_docs` passage."""
    return int(re.search(r"rel(\d+)", d.text).group(1))  # type: ignore[union-attr]


def relevance_logprobs(
    messages: Sequence[Message], candidates: Sequence[str], prefill: str
) -> dict[str, float]:
    """A perfect label-logprob model: a label's log-probability grows with its passage's relevance."""
    found = dict(LINE.findall(messages[-1]["content"]))
    return {lab: -10.0 + 0.3 * int(found[lab]) for lab in candidates}


def dl19_query(datasets_dir: Path, k: int = 20, index: int = 0) -> tuple[str, list[Document]]:
    """The ``index``-th DL19 query and its BM25 top-``k`` passages (first-stage order)."""
    d = datasets_dir / "trec-dl-2019-passage"
    queries = [json.loads(line) for line in (d / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    q = queries[index]
    ranked: list[tuple[int, str, float]] = []
    for line in (d / "run.bm25.tsv").read_text(encoding="utf-8").splitlines():
        qid, did, rank, score = line.split("\t")
        if qid == q["id"]:
            ranked.append((int(rank), did, float(score)))
    ranked.sort()
    wanted = {did for _, did, _ in ranked[:k]}
    corpus: dict[str, dict[str, str]] = {}
    with open(d / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["id"] in wanted:
                corpus[row["id"]] = row
    docs = [
        Document(id=did, text=corpus[did]["text"], title=corpus[did].get("title") or None, score=s)
        for _, did, s in ranked[:k]
    ]
    assert len(docs) == k, f"DL19 query {q['id']} has only {len(docs)} BM25 results"
    return q["text"], docs


HANDCRAFTED_QUERY = "What is the boiling point of water at sea level?"
HANDCRAFTED_RELEVANT = "At sea level, pure water boils at 100 degrees Celsius (212 degrees Fahrenheit)."
HANDCRAFTED_OTHERS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The Great Barrier Reef is the largest coral reef system in the world.",
    "Mount Everest is the highest mountain above sea level, at 8,849 metres.",
    "Python is a popular programming language created by Guido van Rossum.",
    "The violin is a string instrument played with a bow.",
    "Honey bees communicate the location of flowers with a waggle dance.",
]


def handcrafted(position: int) -> tuple[str, list[Document], str]:
    """Query, 8 passages with the relevant one at ``position``, and its id."""
    texts = [*HANDCRAFTED_OTHERS[:position], HANDCRAFTED_RELEVANT, *HANDCRAFTED_OTHERS[position:]]
    docs = [Document(id=f"h{i}", text=t) for i, t in enumerate(texts)]
    return HANDCRAFTED_QUERY, docs, f"h{position}"
