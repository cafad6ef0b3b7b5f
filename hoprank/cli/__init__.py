"""The ``hoprank`` command line. Thin: each command group lives in its own module and
only calls the public API."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="hoprank",
    help="Agentic multi-hop retrieval with LLM listwise reranking.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Agentic multi-hop retrieval with LLM listwise reranking."""


# Each module defines ``register(app: typer.Typer) -> None``.
_COMMAND_MODULES: list[str] = [
    "models",
    "serve",
    "rerank",
    "agents",
    "evals",
    "index",
    "prompts",
    "heads",
    "data",
    "train",
]

for _mod in _COMMAND_MODULES:
    importlib.import_module(f"hoprank.cli.{_mod}").register(app)


@app.command()
def version() -> None:
    """Print the hoprank version."""
    from hoprank._version import __version__

    typer.echo(__version__)


def main() -> None:
    app()
