"""Request limits: body size (413), input sizes (422), bounded concurrency (429)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hoprank.errors import InvalidInput

__all__ = [
    "BodySizeLimitMiddleware",
    "ConcurrencyLimiter",
    "LimitExceeded",
    "Overloaded",
    "check_limit",
    "request_id_from",
]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id_from(given: str) -> str:
    """The client's ``X-Request-ID`` when it is a safe token, else a fresh one."""
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


class LimitExceeded(InvalidInput):
    """An input is larger than a configured limit (answered with 422 naming the limit)."""

    def __init__(self, limit: str, maximum: int, got: int, what: str) -> None:
        super().__init__(f"{what}: {got} exceeds the limit {limit}={maximum}")
        self.limit = limit
        self.maximum = maximum
        self.got = got


class Overloaded(Exception):
    """Every running and queued slot is taken (answered with 429 and ``Retry-After``)."""

    def __init__(self, running: int, queued: int) -> None:
        super().__init__(f"server busy: {running} requests running, {queued} queued; retry later")
        self.running = running
        self.queued = queued


def check_limit(limit: str, maximum: int, got: int, what: str) -> None:
    """Raise :class:`LimitExceeded` when ``got > maximum``."""
    if got > maximum:
        raise LimitExceeded(limit, maximum, got, what)


class ConcurrencyLimiter:
    """A semaphore of ``max_concurrency`` slots with a waiting room of ``max_queue``.

    ``slot()`` admits a request when fewer than ``max_concurrency + max_queue`` are admitted
    and raises :class:`Overloaded` at once otherwise: the queue never grows without bound
    and no request waits for admission. Admitted requests wait for a running slot; callers
    bound that wait with their request timeout.
    """

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._sem = asyncio.Semaphore(max_concurrency)
        self._admitted = 0
        self._running = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return self._admitted - self._running

    def admit(self) -> None:
        """Take a place (running or queued) or raise :class:`Overloaded`."""
        if self._admitted >= self.max_concurrency + self.max_queue:
            raise Overloaded(self._running, self.queued)
        self._admitted += 1

    def leave(self) -> None:
        self._admitted -= 1

    @asynccontextmanager
    async def running_slot(self) -> AsyncIterator[None]:
        """Wait for a running slot (after :meth:`admit`)."""
        async with self._sem:
            self._running += 1
            try:
                yield
            finally:
                self._running -= 1


def _error_body(status: int, kind: str, message: str, details: dict[str, Any], request_id: str) -> bytes:
    body = {"error": {"type": kind, "message": message, "details": details}, "request_id": request_id}
    return json.dumps(body).encode()


class BodySizeLimitMiddleware:
    """Reject request bodies over ``max_bytes`` with 413, declared or streamed.

    A declared ``Content-Length`` over the limit is refused before reading; otherwise the
    body is read up to the limit and replayed to the application.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, scope: Scope, send: Send, got: int | None) -> None:
        given = next((v for k, v in scope.get("headers", []) if k == b"x-request-id"), b"")
        rid = request_id_from(given.decode("latin-1"))
        details: dict[str, Any] = {"limit": "max_body_bytes", "max": self.max_bytes}
        if got is not None:
            details["got"] = got
        body = _error_body(
            413,
            "payload_too_large",
            f"request body exceeds the limit max_body_bytes={self.max_bytes}",
            details,
            rid,
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rid.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._reject(scope, send, declared)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(scope, send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
