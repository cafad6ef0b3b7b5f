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


def _terminate_as_interrupt() -> None:
    """SIGTERM (``kill``, a job scheduler, a container stop) ends a command the way Ctrl-C
    does: run folders record the failed attempt and keep what finished for a resume, and
    training saves its steps, instead of the process vanishing mid-write."""
    import contextlib
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    with contextlib.suppress(ValueError):  # not the main thread (an embedding host): leave it
        signal.signal(signal.SIGTERM, handler)


def main() -> None:
    _terminate_as_interrupt()
    app()
