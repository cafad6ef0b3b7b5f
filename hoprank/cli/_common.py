"""What every command shares: the engine options, ``key=value`` parameter parsing, logging
set-up and the exit-code table.

Exit codes (README "Exit codes"):

====  ======================================================================
code  meaning
====  ======================================================================
0     success
1     runtime failure: the engine or model failed (load, request, timeout),
      or anything unexpected
2     usage or input error: bad options or arguments, an unreadable or invalid
      input file, dataset, config or prompt, a ranker the engine cannot run,
      a missing optional extra
====  ======================================================================
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import typer

from hoprank.errors import (
    CapabilityMissing,
    ConfigError,
    DatasetError,
    HoprankError,
    InvalidInput,
    MissingExtra,
    PromptError,
)
from hoprank.llm.spec import DEFAULT_API_KEY_ENV, EngineSpec

__all__ = [
    "API_KEY_ENV_OPTION",
    "BASE_URL_OPTION",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "INPUT_ERRORS",
    "MODEL_OPTION",
    "THREADS_OPTION",
    "VERBOSE_OPTION",
    "engine_spec",
    "exit_code",
    "fail",
    "parse_params",
    "setup_logging",
]

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2

INPUT_ERRORS: tuple[type[BaseException], ...] = (
    InvalidInput,
    ConfigError,
    DatasetError,
    PromptError,
    CapabilityMissing,
    MissingExtra,
    OSError,  # an input file that cannot be opened or read
    UnicodeDecodeError,
)
"""Exceptions that mean "fix the command or its input" (exit 2); any other is exit 1."""

MODEL_OPTION: Any = typer.Option(
    None, "--model", "-m", help="Engine spec: a pack name, a folder, a .gguf, openai:<model>."
)
BASE_URL_OPTION: Any = typer.Option(
    None, "--base-url", help="OpenAI-compatible endpoint (implies openai:<model>)."
)
API_KEY_ENV_OPTION: Any = typer.Option(
    DEFAULT_API_KEY_ENV, "--api-key-env", help="Env var holding the endpoint's API key."
)
THREADS_OPTION: Any = typer.Option(None, "--threads", min=1, help="CPU threads for a local model.")
VERBOSE_OPTION: Any = typer.Option(False, "--verbose", "-v", help="Log progress to stderr.")


def engine_spec(
    model: str | None,
    base_url: str | None,
    api_key_env: str,
    threads: int | None,
    *,
    default: bool = True,
) -> EngineSpec:
    """The engine the shared options describe; ``default=True`` falls back to the default
    model pack when ``--model`` is not given."""
    default_model = None
    if default:
        from hoprank.llm.packs import DEFAULT_MODEL

        default_model = DEFAULT_MODEL
    return EngineSpec.resolve(
        model, base_url=base_url, api_key_env=api_key_env, threads=threads, default_model=default_model
    )


def parse_params(pairs: list[str] | None, option: str = "--param") -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as JSON when they can be (numbers, bools, lists)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"{option} expects key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def exit_code(exc: BaseException) -> int:
    """The exit code for a failure: :data:`EXIT_USAGE` for :data:`INPUT_ERRORS`, else
    :data:`EXIT_RUNTIME`."""
    return EXIT_USAGE if isinstance(exc, INPUT_ERRORS) else EXIT_RUNTIME


def fail(exc: BaseException) -> typer.Exit:
    """Report ``exc`` on stderr and return the :class:`typer.Exit` to raise: ``error: ...``
    for input errors, ``engine error: Type: ...`` for other hoprank errors, ``error: Type:
    ...`` for anything else."""
    code = exit_code(exc)
    if code == EXIT_USAGE:
        typer.echo(f"error: {exc}", err=True)
    elif isinstance(exc, HoprankError):
        typer.echo(f"engine error: {type(exc).__name__}: {exc}", err=True)
    else:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
    return typer.Exit(code)


def setup_logging(verbose: bool) -> None:
    """INFO logs on stderr with ``--verbose``, warnings only without."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
