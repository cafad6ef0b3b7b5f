"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions JSON shape and
misbehaves on cue.

Each request (except ``GET /health``) takes the next :class:`Reply` from the script; when
the script is empty the ``default`` reply answers (or a 500 saying the script ran out).
Replies can answer normally, answer 429 with ``Retry-After``, answer any error status,
hang, drop the connection, send truncated JSON, send empty ``choices``, send arbitrary
text, carry custom ``logprobs`` (present, missing, malformed) or forward the request to
a real upstream server (a recording proxy). Every request is recorded.

    with FaultServer([rate_limited(1), status(500), chat_ok("hi")]) as fs:
        client = AsyncOpenAI(base_url=fs.base_url, api_key="x", max_retries=0)
        ...
        assert fs.count == 3
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "MISSING",
    "FaultServer",
    "RecordedRequest",
    "Reply",
    "chat_body",
    "chat_ok",
    "drop",
    "empty_choices",
    "hang",
    "logprobs_block",
    "proxy",
    "rate_limited",
    "status",
    "text",
    "truncated_json",
]

MISSING: Any = object()


@dataclass
class Reply:
    """One scripted answer.

    ``delay`` sleeps before answering (a hang when longer than the client's timeout);
    ``drop`` closes the connection without an answer; ``truncate`` sends only the first
    bytes of the body (``honest_length``: Content-Length matches what is sent, so the
    client gets a complete but malformed body; otherwise the connection closes early);
    ``proxy`` forwards the request to that upstream root URL and relays its answer.
    """

    status: int = 200
    body: bytes | str | Mapping[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    truncate: int | None = None
    honest_length: bool = True
    proxy: str | None = None

    def encoded(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", "application/json"
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json"


@dataclass
class RecordedRequest:
    """What the server received (and, for proxied requests, what the upstream answered).

    ``headers`` keys are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    response_status: int | None = None
    response_body: bytes | None = None

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    @property
    def response_json(self) -> Any:
        try:
            return json.loads(self.response_body) if self.response_body else None
        except ValueError:
            return None


# ----------------------------------------------------------------------------- replies


def logprobs_block(
    top: Mapping[str, float] | Sequence[tuple[str, float]], *, chosen: str | None = None
) -> dict[str, Any]:
    """A ``logprobs`` object for one generated token with the given top alternatives."""
    items = list(top.items()) if isinstance(top, Mapping) else list(top)
    if not items and chosen is None:
        raise ValueError("logprobs_block needs at least one token")
    first_tok, first_lp = (chosen, dict(items).get(chosen, -0.1)) if chosen is not None else items[0]
    return {
        "content": [
            {
                "token": first_tok,
                "logprob": first_lp,
                "bytes": list(first_tok.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in items],
            }
        ],
        "refusal": None,
    }


def chat_body(
    content: str = "ok",
    *,
    logprobs: Any = MISSING,
    usage: tuple[int, int] | None = (11, 3),
    model: str = "fault-model",
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """A chat.completion JSON body. ``logprobs=MISSING`` leaves the key out entirely."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": finish_reason,
    }
    if logprobs is not MISSING:
        choice["logprobs"] = logprobs
    body: dict[str, Any] = {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }
    if usage is not None:
        body["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[0] + usage[1],
        }
    return body


def chat_ok(content: str = "ok", **kwargs: Any) -> Reply:
    """A successful chat completion (see :func:`chat_body`)."""
    return Reply(body=chat_body(content, **kwargs))


def status(code: int, message: str = "scripted failure", *, headers: dict[str, str] | None = None) -> Reply:
    """An error status with an OpenAI-shaped error body."""
    err = {"error": {"message": message, "type": "fault", "param": None, "code": code}}
    return Reply(status=code, body=err, headers=dict(headers or {}))


def rate_limited(retry_after: float | str | None = None, message: str = "slow down") -> Reply:
    """429, with ``Retry-After`` (seconds or an HTTP-date string) when given."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return status(429, message, headers=headers)


def hang(seconds: float, then: Reply | None = None) -> Reply:
    """Wait ``seconds`` (released early when the server stops), then answer ``then``."""
    after = then or chat_ok("late")
    return Reply(
        status=after.status,
        body=after.body,
        headers=after.headers,
        delay=seconds,
    )


def drop() -> Reply:
    """Close the connection without sending anything."""
    return Reply(drop=True)


def truncated_json(keep: float = 0.5, *, honest_length: bool = True) -> Reply:
    """A 200 chat completion cut to ``keep`` of its bytes."""
    raw = json.dumps(chat_body("this will be cut")).encode()
    return Reply(
        body=raw,
        headers={"Content-Type": "application/json"},
        truncate=int(len(raw) * keep),
        honest_length=honest_length,
    )


def empty_choices() -> Reply:
    """A 200 with ``choices: []``."""
    body = chat_body()
    body["choices"] = []
    return Reply(body=body)


def text(body: str, *, code: int = 200, content_type: str = "text/plain; charset=utf-8") -> Reply:
    """Arbitrary text (e.g. an HTML error page from a proxy)."""
    return Reply(status=code, body=body, headers={"Content-Type": content_type})


def proxy(upstream: str) -> Reply:
    """Forward to ``upstream`` (root URL, e.g. ``http://127.0.0.1:8080``) and relay its answer."""
    return Reply(proxy=upstream.rstrip("/"))


# ----------------------------------------------------------------------------- server

Script = Iterable[Reply] | Callable[[RecordedRequest], Reply]


class FaultServer:
    """A scripted OpenAI-compatible HTTP server on 127.0.0.1 (threaded, port 0)."""

    def __init__(self, script: Script = (), *, default: Reply | None = None) -> None:
        self._fn: Callable[[RecordedRequest], Reply] | None = script if callable(script) else None
        self._script: list[Reply] = [] if callable(script) else list(script)
        self.default = default
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- script control
    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def reset(self, script: Iterable[Reply] = (), *, default: Reply | None = None) -> None:
        with self._lock:
            self._script = list(script)
            self.default = default
            self.requests.clear()

    @property
    def count(self) -> int:
        """Requests received (``GET /health`` excluded)."""
        return len(self.requests)

    @property
    def pending(self) -> int:
        return len(self._script)

    def _next(self, req: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(req)
            if self._fn is not None:
                return self._fn(req)
            if self._script:
                return self._script.pop(0)
            if self.default is not None:
                return self.default
        return status(500, "fault server script exhausted")

    # -- lifecycle
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FaultServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> FaultServer:
        server = self

        class Handler(_Handler):
            fault = server

        self._release.clear()
        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fault-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    # The socketserver default backlog (5) drops SYNs under a burst of concurrent clients;
    # the kernel retries them only after 1 s, which reads as a client timeout.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, cancellation) resets its connection: expected here.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK stall every response by ~40 ms.
    disable_nagle_algorithm = True
    fault: FaultServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/health"):
            self._send(200, b'{"status":"ok"}', "application/json", {})
            return
        self._handle(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(self.rfile.read(length) if length else b"")

    def _handle(self, body: bytes) -> None:
        req = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            received_at=time.time(),
        )
        reply = self.fault._next(req)
        if reply.delay > 0 and self.fault._release.wait(reply.delay):
            self.close_connection = True
            return
        if reply.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.proxy is not None:
            self._proxy(reply.proxy, req)
            return
        payload, ctype = reply.encoded()
        headers = dict(reply.headers)
        ctype = headers.pop("Content-Type", ctype)
        if reply.truncate is not None:
            full = len(payload)
            payload = payload[: reply.truncate]
            if not reply.honest_length:
                headers["Content-Length"] = str(full)
                self.close_connection = True
        self._send(reply.status, payload, ctype, headers)

    def _proxy(self, upstream: str, req: RecordedRequest) -> None:
        fwd_headers = {k: v for k, v in req.headers.items() if k.lower() in ("content-type", "authorization")}
        request = urllib.request.Request(
            upstream + req.path, data=req.body or None, method=req.method, headers=fwd_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as resp:
                code, payload = resp.status, resp.read()
                ctype = resp.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as e:
            code, payload = e.code, e.read()
            ctype = e.headers.get("Content-Type", "application/json")
        req.response_status, req.response_body = code, payload
        self._send(code, payload, ctype, {})

    def _send(self, code: int, payload: bytes, ctype: str, headers: Mapping[str, str]) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(payload)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
