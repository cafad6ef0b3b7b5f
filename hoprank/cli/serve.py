"""``hoprank serve``: run the HTTP service with uvicorn."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from hoprank.cli._common import EXIT_USAGE, EngineOptions, check_model, check_ranker, fail
from hoprank.cli._options import OptionGroup, with_option_groups
from hoprank.errors import HoprankError
from hoprank.llm.spec import EngineSpec

__all__ = ["register"]

logger = logging.getLogger("hoprank.server")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServeEngineOptions(EngineOptions):
    """The engine options, with the service's help texts: the model loads once at startup."""

    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Engine spec loaded once at startup (pack name, folder, openai:<model>). Required unless --ranker identity (no model, input order).",
        ),
    ] = None
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="OpenAI-compatible endpoint for an openai:<model> engine."),
    ] = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceLimits(OptionGroup):
    """How much the service takes on: requests at once and queued, request sizes, time per
    request (the ``ServerSettings`` fields of the same names; ``--timeout`` sets
    ``request_timeout_s``)."""

    max_concurrency: Annotated[
        int, typer.Option("--max-concurrency", min=1, help="Requests running model work at once.")
    ] = 2
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=0, help="Requests waiting for a slot; beyond: 429.")
    ] = 4
    max_documents: Annotated[
        int, typer.Option("--max-documents", min=1, help="Documents per rerank request.")
    ] = 100
    max_document_chars: Annotated[
        int, typer.Option("--max-document-chars", min=1, help="Characters per document.")
    ] = 20_000
    max_query_chars: Annotated[
        int, typer.Option("--max-query-chars", min=1, help="Characters per query or question.")
    ] = 2_000
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1024, help="Request body size; beyond: 413.")
    ] = 2_000_000
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.001, help="Seconds per request (queueing included); beyond: 504."),
    ] = 120.0

    def settings(self) -> dict[str, Any]:
        """The limits as ``ServerSettings`` keywords."""
        fields = dataclasses.asdict(self)
        fields["request_timeout_s"] = fields.pop("timeout")
        return fields


_HOST: Any = typer.Option("127.0.0.1", "--host", help="Interface to bind.")
_PORT: Any = typer.Option(8000, "--port", min=0, max=65535, help="Port to bind.")
_TOKEN_ENV: Any = typer.Option(
    None,
    "--token-env",
    help="Env var holding the bearer token that /v1 routes require (default: HOPRANK_API_TOKEN if set).",
)
_RANKER: Any = typer.Option(
    None, "--ranker", help="Ranker for requests that name none (default: first with a model, else identity)."
)
_INDEX: Any = typer.Option(None, "--index", help="BM25 index folder (hoprank index) enabling /v1/ask.")
_LOG_LEVEL: Any = typer.Option("info", "--log-level", help="debug, info, warning, error.")


@with_option_groups
def serve_cmd(
    *,
    engine: ServeEngineOptions,
    host: str = _HOST,
    port: int = _PORT,
    token_env: str | None = _TOKEN_ENV,
    default_ranker: str | None = _RANKER,
    limits: ServiceLimits,
    index: Path | None = _INDEX,
    log_level: str = _LOG_LEVEL,
) -> None:
    """Serve /v1/rerank (Cohere/Jina-compatible), /v1/decompose, /v1/ask, /healthz, /metrics."""
    try:
        import uvicorn

        from hoprank.server import create_app
        from hoprank.server.logs import Redactor, configure_logging
    except ImportError as exc:
        typer.echo(
            f"error: the server extra is missing ({exc.name}): pip install 'hoprank[server]'", err=True
        )
        raise typer.Exit(EXIT_USAGE) from None

    token = _bearer_token(token_env)
    spec, default_ranker = _checked(engine, default_ranker)
    settings = _settings(spec, engine.base_url, default_ranker, index, token, limits)
    configure_logging(log_level, Redactor([token, spec.api_key or ""]))
    if not token and not _is_loopback(host):
        logger.warning("serving on a non-loopback address without a bearer token", extra={"host": host})
    info = {"host": host, "port": port, "model": spec.model, "auth": bool(token), "index": str(index or "")}
    logger.info("starting", extra=info)
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
    except HoprankError as exc:
        raise fail(exc) from None


def _checked(engine: ServeEngineOptions, default_ranker: str | None) -> tuple[EngineSpec, str | None]:
    """The engine spec and the default ranker's registered name. No model is exit 2 unless
    the identity ranker is served on purpose; so are an unknown model or ranker, before the
    server starts (and loads anything)."""
    if not engine.model and default_ranker != "identity":
        typer.echo(
            "error: no --model: only the identity ranker (input order, no model) could answer; "
            "pass --model, or --ranker identity to serve it on purpose",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    spec = engine.spec(default=False)
    try:
        check_model(spec)
        if default_ranker is not None:
            default_ranker = check_ranker(default_ranker, {})
    except HoprankError as exc:
        raise fail(exc) from None
    return spec, default_ranker


def _bearer_token(token_env: str | None) -> str:
    """The token /v1 routes require ("" for none); a named but empty variable is exit 2."""
    from hoprank.server import DEFAULT_TOKEN_ENV

    env_name = token_env or DEFAULT_TOKEN_ENV
    raw_token = os.environ.get(env_name)
    token = (raw_token or "").strip()
    if token_env and not token:
        typer.echo(f"error: --token-env {token_env}: the variable is not set or empty", err=True)
        raise typer.Exit(EXIT_USAGE)
    if raw_token is not None and not token:
        # an empty token must not silently turn auth off
        typer.echo(
            f"error: {env_name} is set but empty; set a token, or unset it to serve without auth", err=True
        )
        raise typer.Exit(EXIT_USAGE)
    return token


def _settings(
    engine: EngineSpec,
    base_url: str | None,
    default_ranker: str | None,
    index: Path | None,
    token: str,
    limits: ServiceLimits,
) -> Any:
    """The service's settings (invalid ones are exit 2)."""
    from pydantic import SecretStr, ValidationError

    from hoprank.server import ServerSettings

    try:
        return ServerSettings(
            model=engine.model,
            base_url=base_url,
            api_key=SecretStr(engine.api_key) if engine.api_key else None,
            engine_options={"threads": engine.threads} if engine.threads else {},
            default_ranker=default_ranker,
            index_dir=index,
            api_token=SecretStr(token) if token else None,
            **limits.settings(),
        )
    except ValidationError as exc:
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
