"""``hoprank rerank``: rank documents for queries from JSONL, print ranked JSONL or tables.

Input (a file or ``-`` for stdin), one JSON value per line:

* without ``--query``: ``{"query": ..., "documents": [...], "id"?: ...}`` per line, each
  document a string or ``{"text", "id"?, "title"?}``;
* with ``--query TEXT``: one document per line (a JSON string or such an object).

Exit codes: the table in :mod:`hoprank.cli._common`: 0 ok, 2 bad input (unreadable file,
bad JSON, invalid arguments, a ranker the engine cannot run), 1 engine failure (model
load, engine errors).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import typer

from hoprank._fsio import json_lines
from hoprank.adapters.scoring import relevance_scores
from hoprank.cli._common import (
    QUIET_OPTION,
    VERBOSE_OPTION,
    EngineOptions,
    check_model,
    check_ranker,
    fail,
    parse_params,
    progress_display,
    ranker_help,
    setup_logging,
    show_progress,
)
from hoprank.cli._options import with_option_groups
from hoprank.errors import DatasetError, HoprankError, InvalidInput
from hoprank.llm.spec import EngineSpec
from hoprank.rankers.registry import ranker_spec
from hoprank.types import Document, Ranking

__all__ = ["Item", "parse_documents", "parse_items", "ranking_record", "register"]

logger = logging.getLogger(__name__)

_SNIPPET = 90


@dataclass
class Item:
    """One query and its candidate documents, read from one input line (or the file)."""

    query: str
    documents: list[Document]
    query_id: str | None = None


def _document(value: Any, index: int, where: str) -> Document:
    if isinstance(value, str):
        return Document(id=str(index), text=value)
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        doc_id = value.get("id", value.get("docid"))
        title = value.get("title")
        meta = {k: v for k, v in value.items() if k not in ("id", "docid", "text", "title")}
        return Document(
            id=str(doc_id) if doc_id is not None else str(index),
            text=value["text"],
            title=str(title) if title is not None else None,
            metadata=meta,
        )
    raise InvalidInput(f"{where}: a document must be a string or an object with a 'text' string")


def _lines(stream: TextIO, name: str) -> Iterator[tuple[str, Any]]:
    for n, value in json_lines(stream, name):
        yield f"{name}:{n}", value


def parse_items(stream: TextIO, name: str = "<stdin>") -> Iterator[Item]:
    """Items from ``{"query", "documents"}`` lines (lazily, one per line)."""
    for where, obj in _lines(stream, name):
        if not isinstance(obj, dict) or not isinstance(obj.get("query"), str):
            raise InvalidInput(f"{where}: expected an object with a 'query' string (or use --query)")
        docs = obj.get("documents")
        if not isinstance(docs, list):
            raise InvalidInput(f"{where}: 'documents' must be a list")
        qid = obj.get("id", obj.get("query_id"))
        yield Item(
            query=obj["query"],
            documents=[_document(d, i, f"{where} document {i}") for i, d in enumerate(docs)],
            query_id=str(qid) if qid is not None else None,
        )


def parse_documents(stream: TextIO, name: str = "<stdin>") -> list[Document]:
    """Documents from one-per-line JSONL (used with ``--query``)."""
    return [_document(obj, i, where) for i, (where, obj) in enumerate(_lines(stream, name))]


def ranking_record(item: Item, ranking: Ranking, ranker: str, with_text: bool = True) -> dict[str, Any]:
    """The JSON line printed for one ranked item."""
    positions = {d.id: i for i, d in enumerate(item.documents)}
    scores, kind = relevance_scores(ranking)
    results = []
    for rank, (doc, score) in enumerate(zip(ranking.documents, scores, strict=True), 1):
        row: dict[str, Any] = {"rank": rank, "index": positions[doc.id], "id": doc.id, "score": score}
        if doc.title is not None:
            row["title"] = doc.title
        if with_text:
            row["text"] = doc.text
        results.append(row)
    record: dict[str, Any] = {}
    if item.query_id is not None:
        record["query_id"] = item.query_id
    u = ranking.usage
    record.update(
        query=item.query,
        ranker=ranker,
        score_kind=kind,
        fallbacks=ranking.fallbacks,
        results=results,
        usage={
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "llm_calls": u.llm_calls,
            "seconds": round(u.seconds, 4),
        },
    )
    return record


def _print_table(record: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"{record.get('query_id', '')} {record['query']}".strip()
    table = Table(title=title, title_justify="left")
    for col in ("rank", "index", "id", "score"):
        table.add_column(col, justify="right" if col != "id" else "left", no_wrap=True)
    table.add_column("text")
    for r in record["results"]:
        text = " ".join(str(r.get("text", "")).split())
        text = text if len(text) <= _SNIPPET else text[: _SNIPPET - 1] + "…"
        table.add_row(str(r["rank"]), str(r["index"]), r["id"], f"{r['score']:.4f}", text)
    u = record["usage"]
    table.caption = (
        f"{record['ranker']} · {record['score_kind']} · {u['llm_calls']} LLM calls · "
        f"{u['prompt_tokens']} prompt tokens · {u['seconds']:.2f} s"
    )
    Console(soft_wrap=False).print(table)


def build_ranker(name: str, *, engine: EngineSpec, params: dict[str, Any]) -> Any:
    """The ranker ``name`` on the ``engine`` spec. The name, its parameters and the model
    are checked before any model loads; a ranker that needs no engine loads none."""
    from hoprank.rankers import make_ranker

    name = check_ranker(name, params)
    if not ranker_spec(name).needs_engine:
        return make_ranker(name, **params)
    check_model(engine)
    return make_ranker(name, engine=engine.load(), **params)


def _open(path: str) -> tuple[TextIO, str]:
    if path == "-":
        return sys.stdin, "<stdin>"
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"input file not found: {path}")
    return p.open(encoding="utf-8"), str(p)


async def _run(
    ranker: Any, items: list[Item], top_k: int | None, as_json: bool, name: str, progress: Any = None
) -> int:
    count = 0
    task = None if progress is None else progress.add_task(f"ranking ({name})", total=len(items))
    for item in items:
        ranking = await ranker.arank(item.query, item.documents, top_k=top_k)
        record = ranking_record(item, ranking, name)
        if as_json:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            _print_table(record)
        count += 1
        if task is not None:
            progress.advance(task)
    return count


@with_option_groups
def rerank_cmd(
    input_path: str = typer.Argument("-", metavar="INPUT", help="JSONL file, or - for stdin."),
    query: str | None = typer.Option(
        None, "--query", "-q", help="Rank INPUT's documents (one per line) for this query."
    ),
    ranker: str = typer.Option("first", "--ranker", "-r", help=ranker_help("One of: ")),
    *,
    engine: EngineOptions,
    top_k: int | None = typer.Option(None, "--top-k", "-k", min=1, help="Keep the best k documents."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per query (machine-readable)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Ranker parameter key=value (JSON values)."),
    quiet: bool = QUIET_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Rerank documents with an LLM ranker; read JSONL, write ranked JSONL (--json) or tables.

    Progress (model loading, queries ranked) shows on stderr when it is a terminal."""
    setup_logging(verbose)
    try:
        params = parse_params(param)
        stream, name = _open(input_path)
        try:
            if query is not None:
                if not query.strip():
                    raise InvalidInput("--query must not be empty")
                items = [Item(query=query, documents=parse_documents(stream, name))]
            else:
                items = list(parse_items(stream, name))  # fail on bad input before loading a model
            spec = engine.spec()
            what = f"loading {spec.model}" if ranker_spec(ranker).needs_engine else f"building {ranker}"
            with progress_display(show_progress(quiet), bar=True) as bar:
                loading = bar.add_task(what, total=None)
                built = build_ranker(ranker, engine=spec, params=params)
                bar.remove_task(loading)
                n = asyncio.run(_run(built, items, top_k, as_json, ranker, bar))
        finally:
            if stream is not sys.stdin:
                stream.close()
    except (HoprankError, OSError, UnicodeDecodeError, ModuleNotFoundError) as exc:
        raise fail(exc) from None
    logger.info("ranked %d queries", n)


def register(app: typer.Typer) -> None:
    app.command("rerank", no_args_is_help=False)(rerank_cmd)
