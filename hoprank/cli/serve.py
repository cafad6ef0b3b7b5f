"""``hoprank serve``: run the HTTP service with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Any

import typer

from hoprank.cli._common import (
    API_KEY_ENV_OPTION,
    EXIT_USAGE,
    THREADS_OPTION,
    check_model,
    check_ranker,
    engine_spec,
    fail,
)
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


_MODEL: Any = typer.Option(
    None,
    "--model",
    "-m",
    help="Engine spec loaded once at startup (pack name, folder, openai:<model>). Required unless --ranker identity (no model, input order).",
)
_HOST: Any = typer.Option("127.0.0.1", "--host", help="Interface to bind.")
_PORT: Any = typer.Option(8000, "--port", min=0, max=65535, help="Port to bind.")
_BASE_URL: Any = typer.Option(
    None, "--base-url", help="OpenAI-compatible endpoint for an openai:<model> engine."
)
_TOKEN_ENV: Any = typer.Option(
    None,
    "--token-env",
    help="Env var holding the bearer token that /v1 routes require (default: HOPRANK_API_TOKEN if set).",
)
_RANKER: Any = typer.Option(
    None, "--ranker", help="Ranker for requests that name none (default: first with a model, else identity)."
)
_MAX_CONCURRENCY: Any = typer.Option(
    2, "--max-concurrency", min=1, help="Requests running model work at once."
)
_MAX_QUEUE: Any = typer.Option(4, "--max-queue", min=0, help="Requests waiting for a slot; beyond: 429.")
_MAX_DOCUMENTS: Any = typer.Option(100, "--max-documents", min=1, help="Documents per rerank request.")
_MAX_DOCUMENT_CHARS: Any = typer.Option(
    20_000, "--max-document-chars", min=1, help="Characters per document."
)
_MAX_QUERY_CHARS: Any = typer.Option(
    2_000, "--max-query-chars", min=1, help="Characters per query or question."
)
_MAX_BODY_BYTES: Any = typer.Option(
    2_000_000, "--max-body-bytes", min=1024, help="Request body size; beyond: 413."
)
_TIMEOUT: Any = typer.Option(
    120.0, "--timeout", min=0.001, help="Seconds per request (queueing included); beyond: 504."
)
_INDEX: Any = typer.Option(None, "--index", help="BM25 index folder (hoprank index) enabling /v1/ask.")
_LOG_LEVEL: Any = typer.Option("info", "--log-level", help="debug, info, warning, error.")


def serve_cmd(
    model: str | None = _MODEL,
    host: str = _HOST,
    port: int = _PORT,
    base_url: str | None = _BASE_URL,
    api_key_env: str = API_KEY_ENV_OPTION,
    token_env: str | None = _TOKEN_ENV,
    default_ranker: str | None = _RANKER,
    max_concurrency: int = _MAX_CONCURRENCY,
    max_queue: int = _MAX_QUEUE,
    max_documents: int = _MAX_DOCUMENTS,
    max_document_chars: int = _MAX_DOCUMENT_CHARS,
    max_query_chars: int = _MAX_QUERY_CHARS,
    max_body_bytes: int = _MAX_BODY_BYTES,
    timeout: float = _TIMEOUT,
    index: Path | None = _INDEX,
    threads: int | None = THREADS_OPTION,
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
    if not model and default_ranker != "identity":
        typer.echo(
            "error: no --model: only the identity ranker (input order, no model) could answer; "
            "pass --model, or --ranker identity to serve it on purpose",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)
    engine = engine_spec(model, base_url, api_key_env, threads, default=False)
    try:  # an unknown model or ranker is exit 2 before the server starts (and loads anything)
        check_model(engine)
        if default_ranker is not None:
            default_ranker = check_ranker(default_ranker, {})
    except HoprankError as exc:
        raise fail(exc) from None
    limits = {
        "max_concurrency": max_concurrency,
        "max_queue": max_queue,
        "max_documents": max_documents,
        "max_document_chars": max_document_chars,
        "max_query_chars": max_query_chars,
        "max_body_bytes": max_body_bytes,
        "request_timeout_s": timeout,
    }
    settings = _settings(engine, base_url, default_ranker, index, token, limits)
    configure_logging(log_level, Redactor([token, engine.api_key or ""]))
    if not token and not _is_loopback(host):
        logger.warning("serving on a non-loopback address without a bearer token", extra={"host": host})
    info = {"host": host, "port": port, "model": engine.model, "auth": bool(token), "index": str(index or "")}
    logger.info("starting", extra=info)
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
    except HoprankError as exc:
        raise fail(exc) from None


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
    limits: dict[str, Any],
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
            **limits,
        )
    except ValidationError as exc:
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
