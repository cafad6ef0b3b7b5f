"""``hoprank serve``: run the HTTP service with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

import typer

from hoprank.cli._common import API_KEY_ENV_OPTION, EXIT_USAGE, THREADS_OPTION, engine_spec, fail
from hoprank.errors import HoprankError

__all__ = ["register"]

logger = logging.getLogger("hoprank.server")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_cmd(
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Engine spec loaded once at startup (pack name, folder, openai:<model>). Without it only the identity ranker works.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to bind."),
    base_url: str | None = typer.Option(
        None, "--base-url", help="OpenAI-compatible endpoint for an openai:<model> engine."
    ),
    api_key_env: str = API_KEY_ENV_OPTION,
    token_env: str | None = typer.Option(
        None,
        "--token-env",
        help="Env var holding the bearer token that /v1 routes require (default: HOPRANK_API_TOKEN if set).",
    ),
    default_ranker: str | None = typer.Option(
        None,
        "--ranker",
        help="Ranker for requests that name none (default: first with a model, else identity).",
    ),
    max_concurrency: int = typer.Option(
        2, "--max-concurrency", min=1, help="Requests running model work at once."
    ),
    max_queue: int = typer.Option(4, "--max-queue", min=0, help="Requests waiting for a slot; beyond: 429."),
    max_documents: int = typer.Option(100, "--max-documents", min=1, help="Documents per rerank request."),
    max_document_chars: int = typer.Option(
        20_000, "--max-document-chars", min=1, help="Characters per document."
    ),
    max_query_chars: int = typer.Option(
        2_000, "--max-query-chars", min=1, help="Characters per query or question."
    ),
    max_body_bytes: int = typer.Option(
        2_000_000, "--max-body-bytes", min=1024, help="Request body size; beyond: 413."
    ),
    timeout: float = typer.Option(
        120.0, "--timeout", min=0.001, help="Seconds per request (queueing included); beyond: 504."
    ),
    index: Path | None = typer.Option(
        None, "--index", help="BM25 index folder (hoprank index) enabling /v1/ask."
    ),
    threads: int | None = THREADS_OPTION,
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
) -> None:
    """Serve /v1/rerank (Cohere/Jina-compatible), /v1/decompose, /v1/ask, /healthz, /metrics."""
    from pydantic import SecretStr, ValidationError

    try:
        import uvicorn

        from hoprank.server import DEFAULT_TOKEN_ENV, ServerSettings, create_app
        from hoprank.server.logs import Redactor, configure_logging
    except ImportError as exc:
        typer.echo(
            f"error: the server extra is missing ({exc.name}): pip install 'hoprank[server]'", err=True
        )
        raise typer.Exit(EXIT_USAGE) from None

    env_name = token_env or DEFAULT_TOKEN_ENV
    token = os.environ.get(env_name, "").strip()
    if token_env and not token:
        typer.echo(f"error: --token-env {token_env}: the variable is not set or empty", err=True)
        raise typer.Exit(EXIT_USAGE)
    engine = engine_spec(model, base_url, api_key_env, threads, default=False)
    api_key = engine.api_key or ""
    try:
        settings = ServerSettings(
            model=engine.model,
            base_url=base_url,
            api_key=SecretStr(api_key) if api_key else None,
            engine_options={"threads": engine.threads} if engine.threads else {},
            default_ranker=default_ranker,
            index_dir=index,
            api_token=SecretStr(token) if token else None,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            max_documents=max_documents,
            max_document_chars=max_document_chars,
            max_query_chars=max_query_chars,
            max_body_bytes=max_body_bytes,
            request_timeout_s=timeout,
        )
    except ValidationError as exc:
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    configure_logging(log_level, Redactor([token, api_key]))
    if not token and not _is_loopback(host):
        logger.warning("serving on a non-loopback address without a bearer token", extra={"host": host})
    logger.info(
        "starting",
        extra={
            "host": host,
            "port": port,
            "model": engine.model,
            "auth": bool(token),
            "index": str(index or ""),
        },
    )
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
    except HoprankError as exc:
        raise fail(exc) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
