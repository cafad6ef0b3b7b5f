"""What every command shares: the engine options (:class:`EngineOptions`), ``key=value``
parameter parsing, logging set-up and the exit-code table.

Exit codes (README "Exit codes"):

====  ======================================================================
code  meaning
====  ======================================================================
0     success
1     runtime failure: the engine or model failed (a model that exists but
      does not load, a request, a timeout), or anything unexpected
2     usage or input error: bad options or arguments, an unknown model
      (:func:`check_model`), an unknown ranker or a bad ``-p`` parameter
      (:func:`check_ranker`), an unreadable or invalid input file, dataset,
      config or prompt, a ranker the engine cannot run, a missing optional extra
====  ======================================================================
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hoprank.cli._options import OptionGroup
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

if TYPE_CHECKING:
    from hoprank.llm.base import LLM

__all__ = [
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "INPUT_ERRORS",
    "QUIET_OPTION",
    "VERBOSE_OPTION",
    "EngineOptions",
    "check_model",
    "check_ranker",
    "exit_code",
    "fail",
    "parse_params",
    "progress_display",
    "ranker_help",
    "setup_logging",
    "show_progress",
]

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2

INPUT_ERRORS: tuple[type[BaseException], ...] = (
    InvalidInput,
    ConfigError,
    DatasetError,
    PromptError,
    CapabilityMissing,
    MissingExtra,
    ModuleNotFoundError,  # an optional dependency that no MissingExtra names
    OSError,  # an input file that cannot be opened or read
    UnicodeDecodeError,
)
"""Exceptions that mean "fix the command or its input" (exit 2); any other is exit 1."""

VERBOSE_OPTION: Any = typer.Option(False, "--verbose", "-v", help="Log progress to stderr.")
QUIET_OPTION: Any = typer.Option(False, "--quiet", help="No progress display on stderr.")


@dataclass(frozen=True, kw_only=True)
class EngineOptions(OptionGroup):
    """``--model``, ``--base-url``, ``--api-key-env``, ``--threads``: the engine a command
    runs on (an option group, see :mod:`hoprank.cli._options`)."""

    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Engine spec: a pack name, a folder, a .gguf, openai:<model>."),
    ] = None
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint (implies openai:<model>).")
    ] = None
    api_key_env: Annotated[
        str, typer.Option("--api-key-env", help="Env var holding the endpoint's API key.")
    ] = DEFAULT_API_KEY_ENV
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for a local model.")
    ] = None

    def spec(self, *, default: bool = True) -> EngineSpec:
        """The engine the options describe; ``default=True`` falls back to the default
        model pack when ``--model`` is not given."""
        default_model = None
        if default:
            from hoprank.llm.models.packs import DEFAULT_MODEL

            default_model = DEFAULT_MODEL
        return EngineSpec.resolve(
            self.model,
            base_url=self.base_url,
            api_key_env=self.api_key_env,
            threads=self.threads,
            default_model=default_model,
        )

    def load(self) -> LLM:
        """The engine, loaded; an unknown model is refused (exit 2) before anything loads."""
        spec = self.spec()
        check_model(spec)
        return spec.load()


def check_model(spec: EngineSpec) -> None:
    """Refuse a local model that is neither a known model pack, a folder nor a ``.gguf``
    file (:class:`InvalidInput`, exit 2) before anything loads. An endpoint's model
    (``openai:``) and a ``vllm:`` model (which may name a hub id) are the server's to know."""
    from hoprank.llm.spec import split_spec

    if not spec.model:
        return
    from hoprank.llm import read_adapter_info, split_adapter

    backend, name = split_spec(spec.model)
    name, adapter = split_adapter(name)
    if adapter is not None:
        read_adapter_info(adapter)  # ConfigError (exit 2) for a missing or foreign file
    if backend != "transformers":
        return
    from hoprank.llm.models.packs import PACKS

    path = Path(name).expanduser()
    if name in PACKS or path.is_dir() or (path.is_file() and path.suffix.lower() == ".gguf"):
        return
    raise InvalidInput(
        f"unknown model {name!r}: neither a model pack ({', '.join(sorted(PACKS))}), a transformers "
        "folder nor a .gguf file (see `hoprank models list`)"
    )


_WRAPPER_KEYS = ("samples", "sc_aggregate", "sc_seed", "sc_include_input", "prior_weight", "prior_k")
"""``make_ranker`` parameters that wrap the ranker (self-consistency, prior fusion)."""


def ranker_help(prefix: str = "") -> str:
    """The registered ranker names for an option's help (the registry is the one list)."""
    from hoprank.rankers import ranker_names

    return prefix + ", ".join(ranker_names()) + "."


def check_ranker(name: str, params: dict[str, Any]) -> str:
    """The registered name of ``name``, after checking ``params`` against the ranker's
    config class, before any model loads: an unknown ranker or a bad parameter is a
    :class:`ConfigError` (exit 2) with the config's own message. Parameters that wrap the
    ranker (``samples``, ``prior_weight``...) are checked when it is built."""
    from hoprank.rankers import ranker_spec

    spec = ranker_spec(name)
    own = {k: v for k, v in params.items() if k not in _WRAPPER_KEYS}
    config_class = spec.config_class
    if config_class is None:
        if own:
            raise ConfigError(f"{spec.name} takes no parameters, got {sorted(own)}")
    else:
        config_class(**own)
    return spec.name


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
    if isinstance(exc, ModuleNotFoundError) and not isinstance(exc, HoprankError):
        typer.echo(f"error: {exc}: an optional dependency is missing (pip install 'hoprank[...]')", err=True)
    elif code == EXIT_USAGE:
        typer.echo(f"error: {exc}", err=True)
    elif isinstance(exc, HoprankError):
        typer.echo(f"engine error: {type(exc).__name__}: {exc}", err=True)
    else:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
    return typer.Exit(code)


def show_progress(quiet: bool) -> bool:
    """Whether to draw progress on stderr: not with ``--quiet``, and only on a terminal."""
    return not quiet and sys.stderr.isatty()


def run_progress(progress: bool, as_json: bool) -> bool:
    """Whether an eval run draws its progress bar: ``--progress``, no ``--json`` and a
    terminal. When it draws none, libraries' own bars (transformers' "Loading weights")
    are kept off stderr too."""
    enabled = progress and not as_json and sys.stderr.isatty()
    if not enabled:
        import os

        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers loads
        if "transformers" in sys.modules:  # already loaded: switch its bars off directly
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    return enabled


def progress_display(enabled: bool, *, bar: bool = False) -> Any:
    """A transient ``rich`` progress display on stderr: a spinner, the task's description
    and the elapsed time (``bar``: also a bar and done/total). Disabled: draws nothing.
    Output on a piped stdout is never redirected.
    Use it as a context manager; ``add_task``/``update`` set what it says."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if bar:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    console = Console(stderr=True, force_terminal=True if enabled else None)
    # stdout on the same terminal goes above the display; piped stdout is left alone
    return Progress(
        *columns,
        console=console,
        transient=True,
        disable=not enabled,
        redirect_stdout=sys.stdout.isatty(),
    )


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def setup_logging(verbose: bool) -> None:
    """INFO logs on stderr with ``--verbose``, warnings only without. bm25s sets its own
    logger to DEBUG when imported (``--first-stage retriever:bm25``, the QA systems'
    BM25): without ``--verbose`` it keeps its warnings only too."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    bm25s = logging.getLogger("bm25s")
    if verbose:
        bm25s.removeFilter(_warnings_only)
    else:
        bm25s.addFilter(_warnings_only)  # idempotent: a filter is added once
