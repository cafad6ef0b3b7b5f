"""``hoprank data``: convert published QA formats to the common layout; describe a dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from hoprank.cli._common import fail, setup_logging
from hoprank.errors import HoprankError

_FORMAT_HELP = "Input format: auto, hotpotqa, 2wiki, musique, multihop-rag, beir or common."


def _describe(ds: Any) -> dict[str, Any]:
    from hoprank.evals.dataset import dataset_conventions
    from hoprank.evals.qa_metrics import hop_count

    hops: dict[str, int] = {}
    types: dict[str, int] = {}
    for q in ds.queries.values():
        h = hop_count(q)
        if h is not None:
            hops[str(h)] = hops.get(str(h), 0) + 1
        t = q.metadata.get("type") or q.metadata.get("question_type")
        if isinstance(t, str):
            types[t] = types.get(t, 0) + 1
    return {
        **ds.summary(),
        "conventions": dataset_conventions(ds),
        "hops": dict(sorted(hops.items(), key=lambda kv: int(kv[0]))),
        "types": dict(sorted(types.items())),
    }


def _print(info: dict[str, Any], as_json: bool, head: str) -> None:
    if as_json:
        typer.echo(json.dumps(info, ensure_ascii=False))
        return
    typer.echo(head)
    typer.echo(
        f"  {info['docs']} documents, {info['queries']} questions ({info['judged_queries']} judged), "
        f"{info['qrels']} qrels; relevance level {info['relevance_level']} ({info['relevance_source']})"
    )
    if info["hops"]:
        typer.echo("  hops: " + ", ".join(f"{k}: {v}" for k, v in info["hops"].items()))
    if info["types"]:
        typer.echo("  types: " + ", ".join(f"{k}: {v}" for k, v in info["types"].items()))


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to ``app``."""
    data = typer.Typer(help="Dataset conversion and inspection.", no_args_is_help=True)
    app.add_typer(data, name="data")

    @data.command("convert")
    def convert_cmd(
        src: Path = typer.Argument(..., help="Published file (JSON/JSONL) or folder."),
        out: Path = typer.Option(..., "--out", help="Output folder (common layout; created)."),
        fmt: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
        name: str | None = typer.Option(None, "--name", help="Dataset name (default: the input's)."),
        relevance_level: int | None = typer.Option(
            None, "--relevance-level", min=1, help="Binary-relevance threshold to declare in dataset.json."
        ),
        force: bool = typer.Option(False, "--force", help="Replace a dataset already in --out."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
        verbose: bool = typer.Option(False, "-v", "--verbose", help="Log progress."),
    ) -> None:
        """Convert HotpotQA, 2WikiMultihopQA, MuSiQue or MultiHop-RAG data into the common
        layout (corpus.jsonl, queries.jsonl, qrels.tsv, run.context.tsv, dataset.json)."""
        setup_logging(verbose)
        from hoprank.evals.convert import convert

        try:
            ds = convert(src, out, format=fmt, name=name, relevance_level=relevance_level, overwrite=force)
        except HoprankError as e:
            raise fail(e) from e
        info = {**_describe(ds), "out": str(out)}
        _print(info, as_json, f"converted {src} ({ds.meta.get('format') or fmt}) -> {out}")

    @data.command("info")
    def info_cmd(
        src: Path = typer.Argument(..., help="Dataset folder or file (any supported format)."),
        fmt: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
        verbose: bool = typer.Option(False, "-v", "--verbose", help="Log progress."),
    ) -> None:
        """Counts, declared conventions (relevance level and its source), hop counts and
        question types of a dataset."""
        setup_logging(verbose)
        from hoprank.evals.formats import load_dataset

        try:
            ds = load_dataset(src, format=fmt)
        except HoprankError as e:
            raise fail(e) from e
        _print(_describe(ds), as_json, f"{ds.name}: {ds.source}")
