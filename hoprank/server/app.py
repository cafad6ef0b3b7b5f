"""The FastAPI application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from hoprank._version import __version__
from hoprank.llm.base import LLM
from hoprank.rankers.base import Ranker
from hoprank.server.auth import bearer_dependency, check_bearer
from hoprank.server.errors import error_response
from hoprank.server.limits import BodySizeLimitMiddleware, request_id_from
from hoprank.server.logs import Redactor
from hoprank.server.metrics import Metrics, MetricsMiddleware
from hoprank.server.routes import do_ask, do_decompose, do_rerank
from hoprank.server.schemas import (
    AskRequest,
    AskResponse,
    DecomposeRequest,
    DecomposeResponse,
    ErrorBody,
    HealthResponse,
    RerankRequest,
    RerankResponse,
    V2RerankRequest,
)
from hoprank.server.settings import ServerSettings
from hoprank.server.state import Asker, RankerFactory, ServiceState

__all__ = ["create_app"]

logger = logging.getLogger("hoprank.server")

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": desc}
    for status, desc in [
        (400, "capability missing / bad configuration"),
        (401, "missing or wrong bearer token"),
        (413, "body too large"),
        (422, "invalid input or a limit exceeded"),
        (429, "server busy; see Retry-After"),
        (502, "engine error"),
        (503, "upstream rate limited; see Retry-After"),
        (504, "timeout"),
    ]
}


def _request_id(request: Request) -> str:
    return request_id_from(request.headers.get("x-request-id", ""))


class _HoprankRoute(APIRoute):
    """Routes that turn every exception into a typed, redacted JSON answer and log one
    structured line per request (no headers, no bodies)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        path = self.path

        async def handler(request: Request) -> Response:
            state: ServiceState = request.app.state.hoprank
            rid = _request_id(request)
            request.state.request_id = rid
            t0 = time.perf_counter()
            try:
                if path.startswith(("/v1", "/v2")):
                    # before FastAPI reads and validates the body: an unauthenticated
                    # client gets 401, never a 422 describing the request schema
                    check_bearer(state.settings.token_value(), request.headers.get("authorization"))
                response = await original(request)
            except StarletteHTTPException:
                raise
            except Exception as exc:
                response = error_response(
                    exc, redactor=state.redactor, request_id=rid, retry_after_s=state.settings.retry_after_s
                )
            response.headers["X-Request-ID"] = rid
            logger.info(
                "request",
                extra={
                    "route": path,
                    "method": request.method,
                    "status": response.status_code,
                    "ms": round((time.perf_counter() - t0) * 1000, 2),
                    "request_id": rid,
                },
            )
            return response

        return handler


def create_app(
    settings: ServerSettings | None = None,
    *,
    engine: LLM | None = None,
    rankers: Mapping[str, Ranker] | None = None,
    ranker_factory: RankerFactory | None = None,
    decomposer: Any | None = None,
    asker: Asker | None = None,
) -> FastAPI:
    """Build the service.

    ``engine`` (else the one ``settings.model`` names, loaded once at startup in the
    lifespan) is shared by every ranker; rankers are built per name on first use with
    ``ranker_factory`` (default :func:`hoprank.rankers.make_ranker`) and cached. Prebuilt
    ``rankers`` (name → ranker) are used as they are. ``/v1/decompose`` exists when there
    is a model or a ``decomposer`` (anything with ``async adecompose(question)``);
    ``/v1/ask`` when an ``asker`` is given or ``settings.index_dir`` names a BM25 index.
    """
    settings = settings or ServerSettings.from_env()
    redactor = Redactor([settings.token_value()])
    if settings.api_key is not None:
        redactor.add(settings.api_key.get_secret_value())
    state = ServiceState(
        settings,
        engine=engine,
        rankers=rankers,
        ranker_factory=ranker_factory,
        decomposer=decomposer,
        asker=asker,
        metrics=Metrics(),
        redactor=redactor,
    )
    app = FastAPI(
        title="hoprank",
        version=__version__,
        description=(
            "Rerank documents with LLM listwise rankers (Cohere/Jina-compatible `/v1/rerank`), "
            "decompose multi-hop questions and answer them over a corpus."
        ),
        lifespan=_lifespan(state),
    )
    app.state.hoprank = state
    token = settings.token_value()
    deps = [Depends(bearer_dependency(token))] if token else []
    with_decompose = decomposer is not None or engine is not None or bool(settings.model)
    with_ask = asker is not None or settings.index_dir is not None
    app.include_router(_v1_router(state, deps, with_decompose=with_decompose, with_ask=with_ask))
    app.include_router(_v2_router(state, deps))
    app.include_router(_ops_router(state))
    _install_errors_and_middleware(app, state)
    return app


def _lifespan(state: ServiceState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Load the engine (and the asker of ``settings.index_dir``) at startup; release at exit."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.startup()
        if state.asker is None and state.settings.index_dir is not None:
            from hoprank.server.ask import build_asker

            state.asker = await build_asker(state)
        try:
            yield
        finally:
            await state.shutdown()

    return lifespan


def _v1_router(state: ServiceState, deps: list[Any], *, with_decompose: bool, with_ask: bool) -> APIRouter:
    v1 = APIRouter(prefix="/v1", route_class=_HoprankRoute, dependencies=deps, responses=_ERRORS)

    @v1.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True, tags=["rerank"])
    async def rerank(body: RerankRequest, request: Request) -> RerankResponse:
        """Rerank documents for a query (Cohere/Jina request and response shape).

        ``relevance_score`` is in [0, 1] and non-increasing with rank: a probability where
        the ranker yields one (pointwise, single-window FIRST), else ``1/rank``
        (``meta.score_kind``: ``probability`` or ``rank``).
        An empty ``documents`` list returns an empty ``results`` list.
        """
        return await do_rerank(state, body, request.state.request_id, is_disconnected=request.is_disconnected)

    if with_decompose:

        @v1.post("/decompose", response_model=DecomposeResponse, tags=["agents"])
        async def decompose(body: DecomposeRequest, request: Request) -> DecomposeResponse:
            """Split a multi-hop question into simple sub-questions."""
            return await do_decompose(
                state, body, request.state.request_id, is_disconnected=request.is_disconnected
            )

    if with_ask:

        @v1.post("/ask", response_model=AskResponse, tags=["agents"])
        async def ask(body: AskRequest, request: Request) -> AskResponse:
            """Answer a question over the server's corpus, with the passages it cites."""
            return await do_ask(
                state, body, request.state.request_id, is_disconnected=request.is_disconnected
            )

    return v1


def _v2_router(state: ServiceState, deps: list[Any]) -> APIRouter:
    v2 = APIRouter(prefix="/v2", route_class=_HoprankRoute, dependencies=deps, responses=_ERRORS)

    @v2.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True, tags=["rerank"])
    async def rerank_v2(body: V2RerankRequest, request: Request) -> RerankResponse:
        """Rerank documents for a query in Cohere's v2 shape (``cohere.ClientV2().rerank``):
        the same ranking and scores as ``/v1/rerank``, results without documents and
        ``meta.api_version.version == "2"``."""
        v1_body = RerankRequest(
            model=body.model, query=body.query, documents=body.documents, top_n=body.top_n, ranker=body.ranker
        )
        out = await do_rerank(
            state, v1_body, request.state.request_id, is_disconnected=request.is_disconnected
        )
        out.meta.api_version = {"version": "2"}
        return out

    return v2


def _ops_router(state: ServiceState) -> APIRouter:
    settings = state.settings
    ops = APIRouter(route_class=_HoprankRoute)

    @ops.get("/healthz", response_model=HealthResponse, tags=["ops"])
    async def healthz() -> HealthResponse:
        """Liveness and what the server offers (never needs a token)."""
        return HealthResponse(
            status="ok",
            version=__version__,
            model=settings.model or (state.engine.name if state.engine else None),
            rankers=state.ranker_names,
            default_ranker=settings.resolved_default_ranker,
            ask=state.asker is not None,
        )

    @ops.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return ops


def _install_errors_and_middleware(app: FastAPI, state: ServiceState) -> None:
    settings = state.settings

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(
            exc, redactor=state.redactor, request_id=None, retry_after_s=settings.retry_after_s
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, http_error)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
