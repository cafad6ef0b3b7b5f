"""Map exceptions to HTTP answers. Bodies carry a type and a redacted message, never a
stack trace or a secret: ``{"error": {"type", "message", "details"}, "request_id"}``."""

from __future__ import annotations

import logging
import math
import traceback
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hoprank.errors import (
    CapabilityMissing,
    ConfigError,
    ContextOverflow,
    EngineError,
    EngineTimeout,
    HoprankError,
    InvalidInput,
    MissingExtra,
    RateLimited,
)
from hoprank.llm.runtime.worker import EngineBusy
from hoprank.server.auth import Unauthorized
from hoprank.server.limits import LimitExceeded, Overloaded
from hoprank.server.logs import Redactor
from hoprank.server.state import ClientDisconnected, RequestTimeout

__all__ = ["error_response", "status_for"]

logger = logging.getLogger("hoprank.server")

# (exception type, status, error type) in match order: subclasses before their bases.
_TABLE: list[tuple[type[BaseException], int, str]] = [
    (Unauthorized, 401, "unauthorized"),
    (Overloaded, 429, "overloaded"),
    (EngineBusy, 429, "overloaded"),
    (ClientDisconnected, 499, "client_closed_request"),
    (LimitExceeded, 422, "limit_exceeded"),
    (InvalidInput, 422, "invalid_input"),
    (ConfigError, 400, "config_error"),
    (CapabilityMissing, 400, "capability_missing"),
    (ContextOverflow, 422, "context_overflow"),
    (RateLimited, 503, "upstream_rate_limited"),
    (EngineTimeout, 504, "upstream_timeout"),
    (RequestTimeout, 504, "timeout"),
    (TimeoutError, 504, "timeout"),
    (EngineError, 502, "engine_error"),
    (MissingExtra, 500, "missing_extra"),
    (HoprankError, 500, "internal_error"),
]


def status_for(exc: BaseException) -> tuple[int, str]:
    """HTTP status and error type for ``exc`` (500 ``internal_error`` when unknown)."""
    for cls, status, kind in _TABLE:
        if isinstance(exc, cls):
            return status, kind
    return 500, "internal_error"


def _body(kind: str, message: str, details: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "details": details}, "request_id": request_id}


def error_response(
    exc: BaseException, *, redactor: Redactor, request_id: str | None, retry_after_s: int
) -> JSONResponse:
    """The JSON answer for ``exc``; logs it (redacted) at a level fitting its status."""
    if isinstance(exc, RequestValidationError):
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": redactor(str(e.get("msg", ""))),
                "type": e.get("type"),
            }
            for e in exc.errors()[:20]
        ]
        return JSONResponse(
            _body("validation_error", "request body is not valid", {"errors": errors}, request_id), 422
        )
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "http error"
        return JSONResponse(
            _body("http_error", redactor(detail), {}, request_id), exc.status_code, headers=exc.headers
        )
    status, kind = status_for(exc)
    details: dict[str, Any] = {}
    headers: dict[str, str] = {}
    message = redactor(str(exc)) if status < 500 or isinstance(exc, (EngineError, MissingExtra)) else ""
    if isinstance(exc, LimitExceeded):
        details = {"limit": exc.limit, "max": exc.maximum, "got": exc.got}
    elif isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = (
            'Bearer realm="hoprank"'
            if exc.reason.startswith("missing")
            else 'Bearer realm="hoprank", error="invalid_token"'
        )
    elif isinstance(exc, Overloaded):
        headers["Retry-After"] = str(retry_after_s)
        details = {"running": exc.running, "queued": exc.queued}
    elif isinstance(exc, EngineBusy):
        headers["Retry-After"] = str(retry_after_s)
        details = {"engine_queued": exc.pending}
    elif isinstance(exc, RateLimited):
        ra = exc.retry_after
        headers["Retry-After"] = str(max(1, math.ceil(ra)) if ra and math.isfinite(ra) else retry_after_s)
    elif isinstance(exc, CapabilityMissing):
        details = {"capability": exc.capability}
    if status >= 500 and not message:
        message = "internal server error" if kind == "internal_error" else kind.replace("_", " ")
    level = logging.ERROR if status >= 500 and status not in (502, 503, 504) else logging.WARNING
    extra: dict[str, Any] = {
        "status": status,
        "error_type": kind,
        "exception": type(exc).__name__,
        "detail": redactor(str(exc)),
        "request_id": request_id,
    }
    if status == 500 and kind == "internal_error":
        # The traceback of an unexpected error goes to the log, redacted, never into the body.
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        extra["traceback"] = redactor(tb)
    logger.log(level, "request failed", extra=extra)
    return JSONResponse(_body(kind, message, details, request_id), status, headers=headers)
