"""Optional bearer-token auth for the ``/v1`` routes (constant-time comparison)."""

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["Unauthorized", "bearer_dependency", "check_bearer"]


class Unauthorized(Exception):
    """Missing or wrong bearer token (answered with 401 and ``WWW-Authenticate``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_bearer(token: str | None, authorization: str | None) -> None:
    """Raise :class:`Unauthorized` unless ``authorization`` is ``Bearer <token>`` (no-op
    when ``token`` is ``None``: auth is off). Constant-time comparison."""
    if not token:
        return
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("missing bearer token")
    if not hmac.compare_digest(given.strip().encode("utf-8", errors="replace"), token.encode("utf-8")):
        raise Unauthorized("invalid bearer token")


def bearer_dependency(token: str) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that passes only with ``Authorization: Bearer <token>``.

    The comparison uses :func:`hmac.compare_digest` on bytes, so its time does not depend
    on how much of the token matched. The token is never logged or echoed. The scheme
    appears in the OpenAPI document as ``HTTPBearer``.
    """
    if not token:
        raise ValueError("empty bearer token")
    expected = token.encode("utf-8")
    scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")

    # No ``from __future__ import annotations`` here: FastAPI must see the local ``scheme``.
    async def require_bearer(creds: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        if creds is None:
            raise Unauthorized("missing bearer token")
        given = creds.credentials.encode("utf-8", errors="replace")
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("invalid bearer token")

    return require_bearer
