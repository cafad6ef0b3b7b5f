"""``hoprank prompts``: list the built-in prompt templates and show or render one.

    hoprank prompts list                       # name@version, hash, description
    hoprank prompts show rankgpt               # the latest version, as stored
    hoprank prompts show rankgpt-short@1 --render query="what is x" \\
        --render 'passages=[{"label": "1", "text": "x is y"}]' --render num=1 \\
        --render example="[1]" --render label_desc="a numerical"
    hoprank prompts show ./my-prompt.yaml      # a user file

``--render`` values are parsed as JSON where they can be (numbers, lists, objects) and
kept as text otherwise. Rendering is strict: a missing or unknown variable is an error.
Exit codes (the table in :mod:`hoprank.cli._common`): 0 ok; 2 an unknown prompt, a malformed
file or a rendering error.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from hoprank.cli._common import EXIT_USAGE
from hoprank.errors import HoprankError

__all__ = ["register"]

prompts_app = typer.Typer(
    name="prompts", help="List, show and render versioned prompt templates.", no_args_is_help=True
)


def _parse_vars(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--render expects var=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def _shorten(text: str, width: int = 90) -> str:
    if len(text) <= width:
        return text
    return text[:width].rsplit(" ", 1)[0] + " …"


@prompts_app.command("list")
def list_cmd(
    full: bool = typer.Option(False, "--full", help="Whole descriptions (default: the first 90 characters)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """Every built-in prompt: name@version, content hash and description (* = latest version)."""
    from hoprank.prompts import list_prompts, load_prompt

    rows = []
    latest: dict[str, int] = {}
    for ref in list_prompts():
        tpl = load_prompt(ref)
        latest[tpl.name] = max(latest.get(tpl.name, 0), tpl.version)
        rows.append(tpl)
    if as_json:
        data = [
            {
                "name": t.name,
                "version": t.version,
                "hash": t.content_hash,
                "ref": t.ref,
                "latest": latest[t.name] == t.version,
                "variables": t.variables,
                "output_pattern": t.output_pattern,
                "description": t.description,
            }
            for t in rows
        ]
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="hoprank prompts", title_justify="left")
    table.add_column("prompt", no_wrap=True)
    table.add_column("hash", no_wrap=True)
    table.add_column("description")
    for t in rows:
        star = " *" if latest[t.name] == t.version else ""
        text = " ".join(t.description.split())
        table.add_row(f"{t.name}@{t.version}{star}", t.content_hash, escape(text if full else _shorten(text)))
    table.caption = "* latest version (what a bare name loads)"
    Console().print(table)


@prompts_app.command("show")
def show_cmd(
    prompt: str = typer.Argument(..., help="NAME, NAME@VERSION or a path to a YAML prompt file."),
    render: list[str] | None = typer.Option(
        None, "--render", "-r", help="Render with variable var=value (repeatable; JSON values allowed)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON (the template, or the rendered messages)."
    ),
) -> None:
    """Show a prompt template as stored, or render it with ``--render var=value ...``."""
    from hoprank.prompts import load_prompt

    variables = _parse_vars(render)
    try:
        tpl = load_prompt(prompt)
        messages = tpl.render(**variables) if render else None
    except HoprankError as e:
        typer.echo(f"error: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(EXIT_USAGE) from e
    if as_json:
        if messages is not None:
            payload: Any = {"ref": tpl.ref, "messages": messages}
        else:
            payload = {"ref": tpl.ref, "hash": tpl.content_hash, **tpl.model_dump(mode="json")}
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    typer.echo(f"# {tpl.ref}")
    if messages is not None:
        for rendered in messages:
            typer.echo(f"--- {rendered['role']}")
            typer.echo(rendered["content"])
        return
    typer.echo(f"description: {' '.join(tpl.description.split())}")
    typer.echo(f"variables: {', '.join(tpl.variables)}")
    if tpl.output_pattern is not None:
        typer.echo(f"output_pattern: {tpl.output_pattern}")
    for key, value in tpl.params.items():
        typer.echo(f"params.{key}: {json.dumps(value, ensure_ascii=False)}")
    for m in tpl.messages:
        typer.echo(f"--- {m.role}")
        typer.echo(m.content)


def register(app: typer.Typer) -> None:
    app.add_typer(prompts_app, name="prompts")
