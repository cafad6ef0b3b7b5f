"""The hoprank HTTP service (``pip install 'hoprank[server]'``).

``create_app(settings)`` builds a FastAPI app: Cohere/Jina-compatible ``POST /v1/rerank``,
``POST /v1/decompose``, ``POST /v1/ask``, ``GET /healthz``, ``GET /metrics`` and OpenAPI
docs at ``/docs``. ``hoprank serve`` runs it with uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hoprank.server.settings import DEFAULT_TOKEN_ENV, ServerSettings

if TYPE_CHECKING:
    from hoprank.server.app import create_app

__all__ = ["DEFAULT_TOKEN_ENV", "ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        try:
            from hoprank.server.app import create_app
        except ImportError as exc:  # fastapi / prometheus-client missing
            from hoprank.errors import MissingExtra

            raise MissingExtra("server", exc.name) from exc
        return create_app
    raise AttributeError(name)
