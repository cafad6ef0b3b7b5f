"""``hoprank heads``: select ICR retrieval heads on a calibration dataset, list them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hoprank.errors import HoprankError

__all__ = ["register"]

heads_app = typer.Typer(
    name="heads", help="Select and list ICR retrieval heads (ICRRanker(heads=NAME)).", no_args_is_help=True
)


def _items(datasets: list[str], run: str | None, queries: str | None, depth: int) -> list[Any]:
    from hoprank.evals.formats import load_dataset

    start, _, end = (queries or ":").partition(":")
    out: list[Any] = []
    for spec in datasets:
        ds = load_dataset(spec)
        first = ds.run(run)
        qids = [q for q in ds.queries if q in first and ds.qrels.get(q)]
        qids = qids[int(start) if start else 0 : int(end) if end else None]
        out += [(ds.name, q, ds.queries[q].text, ds.candidates(q, first, depth), ds.qrels[q]) for q in qids]
    return out


@heads_app.command("select")
def select_cmd(
    dataset: list[str] = typer.Option(
        ..., "--dataset", "-d", help="Calibration dataset(s) with qrels (not your test set)."
    ),
    name: str = typer.Option(
        ..., "--name", help="Name to save the selection under ($HOPRANK_CACHE/heads/NAME.json)."
    ),
    model: str = typer.Option(
        "qwen2.5-coder-1.5b", "--model", "-m", help="Engine spec (pack, folder, .gguf)."
    ),
    k: int = typer.Option(16, "--k", help="Heads to keep (16: fixed in advance, as QRHead)."),
    run: str = typer.Option(None, "--run", help="First-stage run of the dataset (default: its only run)."),
    queries: str = typer.Option(None, "--queries", help="START:END slice of the judged queries."),
    depth: int = typer.Option(20, "--depth", help="Candidates per query."),
    max_doc_tokens: int = typer.Option(300, "--max-doc-tokens", help="ICR's per-passage token cap."),
    records: Path = typer.Option(
        None, "--records", help="Also append the per-head scores here (JSON lines)."
    ),
) -> None:
    """Score every attention head on the calibration queries and save the best K."""
    from hoprank.llm import load_engine
    from hoprank.rankers.heads import (
        HeadRecord,
        collect_head_scores,
        engine_identity,
        save_selection,
        select_from_records,
        write_records,
    )
    from hoprank.rankers.icr import ICRRanker

    console = Console(stderr=True)
    try:
        items = _items(dataset, run, queries, depth)
        if not items:
            raise typer.BadParameter("no judged queries with candidates in the calibration data")
        engine = load_engine(model)
        ranker = ICRRanker(engine, max_doc_tokens=max_doc_tokens)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
        with Progress(*columns, TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("head scores", total=len(items))

            def on_record(rec: HeadRecord) -> None:
                if records is not None:
                    write_records([rec], records)
                bar.advance(task)

            recs = asyncio.run(collect_head_scores(ranker, items, on_record=on_record))
        model_name, sha = engine_identity(engine)
        sel = select_from_records(recs, k=k, name=name, model=model_name, model_sha256=sha)
        path = save_selection(sel)
    except HoprankError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    typer.echo(json.dumps({"saved": str(path), **sel.model_dump(exclude={"head_ndcg"})}, indent=1))


@heads_app.command("list")
def list_cmd() -> None:
    """Saved head selections."""
    from hoprank.rankers.heads import HeadSelection, heads_dir

    table = Table(title=f"head selections in {heads_dir()}")
    for col in ("name", "model", "sha256", "k", "calibration", "nDCG@10 all → selected"):
        table.add_column(col)
    for p in sorted(heads_dir().glob("*.json")):
        try:
            s = HeadSelection.model_validate_json(p.read_text(encoding="utf-8"))
        except ValueError:
            table.add_row(p.stem, "[red]unreadable[/red]", "", "", "", "")
            continue
        cal = ", ".join(f"{c['dataset']} ({c['queries']})" for c in s.calibration)
        table.add_row(
            s.name, s.model, s.model_sha256[:12], str(s.k), cal, f"{s.all_heads_ndcg} → {s.selected_ndcg}"
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(heads_app)
