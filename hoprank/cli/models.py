"""``hoprank models``: list and pull the offline model packs."""

from __future__ import annotations

import logging
import time

import typer
from rich.console import Console
from rich.table import Table

from hoprank.cli._common import EXIT_RUNTIME, EXIT_USAGE
from hoprank.errors import HoprankError

__all__ = ["register"]

models_app = typer.Typer(name="models", help="List and pull offline model packs.", no_args_is_help=True)


@models_app.command("list")
def list_cmd() -> None:
    """Show every known pack: size, whether its wheels are installed, whether it is converted."""
    from hoprank.llm.models.packs import DEFAULT_MODEL, cache_dir, list_packs

    table = Table(title="hoprank model packs")
    table.add_column("name", no_wrap=True)
    for col in ("params", "size", "installed", "cached"):
        table.add_column(col, no_wrap=True)
    table.add_column("sha256", no_wrap=True)
    for p in list_packs():
        name = f"{p.name} *" if p.name == DEFAULT_MODEL else p.name
        table.add_row(
            name,
            p.params,
            f"{p.size / 1e6:,.0f} MB",
            "yes" if p.installed else "[red]no[/red]",
            "yes" if p.cached else "no",
            p.sha256[:16] + "…",
        )
    console = Console()
    console.print(table)
    console.print(f"* default model; cache: {cache_dir()}")


@models_app.command("pull")
def pull_cmd(
    names: list[str] = typer.Argument(None, help="Pack names (see `hoprank models list`)."),
    all_: bool = typer.Option(False, "--all", help="Pull every known pack."),
) -> None:
    """Assemble, sha256-verify and convert packs into the cache ($HOPRANK_CACHE)."""
    from hoprank.llm.models.packs import PACKS, pull

    targets = list(PACKS) if all_ else list(names or [])
    if not targets:
        typer.echo("give pack names or --all", err=True)
        raise typer.Exit(EXIT_USAGE)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    console = Console(stderr=True)
    failed = 0
    for name in targets:
        t0 = time.perf_counter()
        try:
            path = pull(name)
        except HoprankError as e:
            console.print(f"[red]failed[/red] {name}: {e}")
            failed += 1
            continue
        console.print(f"[green]ok[/green] {name}: {path} ({time.perf_counter() - t0:.1f} s)")
    if failed:
        raise typer.Exit(EXIT_RUNTIME)


@models_app.command("requirements")
def requirements_cmd(
    names: list[str] = typer.Argument(None, help="Pack names (default: every known pack)."),
) -> None:
    """Print the pip requirements (install with --no-deps) that carry the packs' weights."""
    from hoprank.llm.models.packs import PACKS

    targets = list(names or PACKS)
    unknown = [n for n in targets if n not in PACKS]
    if unknown:
        typer.echo(f"unknown pack(s): {', '.join(unknown)}; known: {', '.join(PACKS)}", err=True)
        raise typer.Exit(EXIT_USAGE)
    typer.echo(" ".join(req for n in targets for req in PACKS[n].requirements))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
