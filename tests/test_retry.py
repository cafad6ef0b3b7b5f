"""The retry layer, against a real HTTP fault server on 127.0.0.1."""

from __future__ import annotations

import email.utils
import logging
import time
import traceback

import pytest
from servers.fault_server import (
    FaultServer,
    chat_ok,
    drop,
    hang,
    rate_limited,
    status,
    text,
    truncated_json,
)

from hoprank.errors import ContextOverflow, EngineError, EngineTimeout, RateLimited
from hoprank.llm.engines.openai_engine import OpenAIEngine
from hoprank.llm.engines.scripted import WhitespaceTokenizer
from hoprank.llm.transport.retry import (
    RetryPolicy,
    RetryStats,
    error_from_status,
    parse_retry_after,
    retry_async,
)

pytest_plugins = ["servers.fixtures"]

MSGS = [{"role": "user", "content": "hello"}]
FAST = RetryPolicy(max_attempts=4, initial=0.02, max_wait=0.1, total_budget_s=20.0)


def engine(
    fs: FaultServer, policy: RetryPolicy = FAST, *, timeout: float = 5.0, key: str = "sk-test"
) -> OpenAIEngine:
    return OpenAIEngine(
        "fault-model",
        base_url=fs.base_url,
        api_key=key,
        server="vllm",
        retry=policy,
        timeout=timeout,
        tokenizer=WhitespaceTokenizer(),
    )


# ----------------------------------------------------------------------------- pure parts


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(30, abs=1.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"Retry-After": past}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_status_mapping() -> None:
    assert isinstance(error_from_status(429), RateLimited)
    for code in (408, 409, 500, 502, 503, 504):
        err = error_from_status(code)
        assert err.retryable and err.status_code == code
    for code in (400, 401, 403, 404, 422):
        err = error_from_status(code, body={"error": {"message": "no"}})
        assert not err.retryable and err.status_code == code
        assert not isinstance(err, ContextOverflow)
    llama = {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 5000,
            "n_ctx": 4096,
        }
    }
    err = error_from_status(400, body=llama)
    assert isinstance(err, ContextOverflow) and not err.retryable
    assert (err.prompt_tokens, err.context_window) == (5000, 4096)
    vllm = (
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
        "(4000 in the messages, 1000 in the completion)."
    )
    err = error_from_status(400, body=llama["error"])  # as openai hands it over: unwrapped
    assert isinstance(err, ContextOverflow) and (err.prompt_tokens, err.context_window) == (5000, 4096)
    newer = "request (3031 tokens) exceeds the available context size (1024 tokens), try increasing it"
    err = error_from_status(400, body={"code": 400, "message": newer, "type": "exceed_context_size_error"})
    assert isinstance(err, ContextOverflow) and (err.prompt_tokens, err.context_window) == (3031, 1024)
    err = error_from_status(400, body={"object": "error", "message": vllm})
    assert isinstance(err, ContextOverflow)
    assert (err.prompt_tokens, err.context_window) == (5000, 4096)


def test_policy_backoff_grows_with_jitter_bounds() -> None:
    p = RetryPolicy(initial=0.5, max_wait=3.0)
    for n, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        waits = [p.backoff(n) for _ in range(50)]
        assert all(base / 2 <= w <= base for w in waits)
        assert len(set(waits)) > 1  # jittered
    assert RetryPolicy(jitter=False, initial=0.5).backoff(3) == 2.0
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


async def test_programming_errors_pass_through_unretried() -> None:
    calls = 0

    async def fn(remaining: float) -> int:
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    stats = RetryStats()
    with pytest.raises(KeyError):
        await retry_async(fn, FAST, stats=stats)
    assert calls == 1 and stats.count == 1


# ----------------------------------------------------------------------------- real HTTP


async def test_429_500_hang_then_success(fault: FaultServer) -> None:
    fault.push(rate_limited(1), status(500), hang(10), chat_ok("finally"))
    eng = engine(fault, timeout=0.5)
    t0 = time.perf_counter()
    out = await eng.generate(MSGS, max_tokens=5)
    elapsed = time.perf_counter() - t0
    assert out.text == "finally"
    assert fault.count == 4
    assert eng.stats.attempts == 4 and eng.stats.retries == 3 and eng.stats.calls == 1
    # Retry-After: 1 honoured, plus the 0.5 s timeout of the hung attempt
    assert elapsed >= 1.0 + 0.5
    gaps = [b.received_at - a.received_at for a, b in zip(fault.requests, fault.requests[1:], strict=False)]
    assert gaps[0] >= 0.95


async def test_retry_after_http_date(fault: FaultServer) -> None:
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: waits 1-2 s
    fault.push(rate_limited(when), chat_ok("ok"))
    t0 = time.perf_counter()
    assert (await engine(fault).generate(MSGS, max_tokens=2)).text == "ok"
    assert time.perf_counter() - t0 >= 0.9
    assert fault.count == 2


async def test_rate_limit_exhausts_attempts(fault: FaultServer) -> None:
    fault.default = rate_limited(0.05)
    eng = engine(fault, RetryPolicy(max_attempts=3, initial=0.01, total_budget_s=20))
    with pytest.raises(RateLimited) as info:
        await eng.generate(MSGS, max_tokens=2)
    assert info.value.retry_after == pytest.approx(0.05)
    assert info.value.attempts == 3  # type: ignore[attr-defined]
    assert fault.count == 3 and eng.stats.failures == 1


async def test_retry_after_beyond_budget_gives_up_at_once(fault: FaultServer) -> None:
    fault.default = rate_limited(30)
    eng = engine(fault, RetryPolicy(max_attempts=5, total_budget_s=3.0))
    t0 = time.perf_counter()
    with pytest.raises(RateLimited) as info:
        await eng.generate(MSGS, max_tokens=2)
    assert time.perf_counter() - t0 < 2.0
    assert info.value.retry_after == 30 and fault.count == 1


async def test_server_errors_exhaust_attempts(fault: FaultServer) -> None:
    fault.default = status(503, "overloaded")
    with pytest.raises(EngineError) as info:
        await engine(fault).generate(MSGS, max_tokens=2)
    assert info.value.retryable and info.value.status_code == 503
    assert info.value.attempts == 4 and fault.count == 4  # type: ignore[attr-defined]
    assert "RetryError" not in type(info.value).__name__


async def test_timeouts_exhaust_attempts(fault: FaultServer) -> None:
    fault.default = hang(10)
    eng = engine(fault, RetryPolicy(max_attempts=2, initial=0.01, total_budget_s=20), timeout=0.3)
    t0 = time.perf_counter()
    with pytest.raises(EngineTimeout) as info:
        await eng.generate(MSGS, max_tokens=2)
    assert 0.6 <= time.perf_counter() - t0 < 5
    assert info.value.attempts == 2 and fault.count == 2  # type: ignore[attr-defined]


async def test_total_budget_cuts_attempt_timeout(fault: FaultServer) -> None:
    fault.default = hang(10)
    eng = engine(fault, RetryPolicy(max_attempts=10, initial=0.01, total_budget_s=1.0), timeout=30)
    t0 = time.perf_counter()
    with pytest.raises(EngineTimeout):
        await eng.generate(MSGS, max_tokens=2)
    assert time.perf_counter() - t0 < 3.0


@pytest.mark.parametrize("reply", [drop(), truncated_json(), truncated_json(honest_length=False)])
async def test_connection_faults_are_retried(fault: FaultServer, reply: object) -> None:
    fault.push(reply, chat_ok("recovered"))  # type: ignore[arg-type]
    assert (await engine(fault).generate(MSGS, max_tokens=2)).text == "recovered"
    assert fault.count == 2


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retried(fault: FaultServer, code: int) -> None:
    fault.default = status(code, "rejected")
    with pytest.raises(EngineError) as info:
        await engine(fault).generate(MSGS, max_tokens=2)
    assert not info.value.retryable and info.value.status_code == code
    assert fault.count == 1


async def test_context_overflow_is_typed_and_not_retried(fault: FaultServer) -> None:
    fault.default = status(
        400, "This model's maximum context length is 2048 tokens. However, you requested 3000 tokens."
    )
    with pytest.raises(ContextOverflow) as info:
        await engine(fault).generate(MSGS, max_tokens=2)
    assert info.value.context_window == 2048 and fault.count == 1


async def test_api_key_never_leaks(fault: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-live-SECRET-0123456789abcdef"

    def echo_auth(req):  # type: ignore[no-untyped-def]
        # a hostile/buggy server that echoes the Authorization header into its error body
        return status(
            401 if fault.count == 1 else 500, f"bad credentials: {req.headers.get('authorization')}"
        )

    fault.reset()
    fault._fn = echo_auth
    caplog.set_level(logging.DEBUG)
    eng = engine(fault, key=secret)
    assert secret not in repr(eng) and secret not in str(eng.describe())
    with pytest.raises(EngineError) as info:
        await eng.generate(MSGS, max_tokens=2)
    assert fault.requests[0].headers["authorization"] == f"Bearer {secret}"  # it was sent...
    rendered = "".join(traceback.format_exception(info.value))
    for shown in (str(info.value), repr(info.value), rendered, caplog.text):
        assert secret not in shown  # ...and never shown
    assert "***" in str(info.value)
    # 500s are retried and logged: the log lines must be clean too
    fault._fn = lambda req: status(500, f"echo {req.headers.get('authorization')}")
    with pytest.raises(EngineError) as info:
        await eng.generate(MSGS, max_tokens=2)
    assert info.value.attempts == 4  # type: ignore[attr-defined]
    assert secret not in caplog.text and secret not in "".join(traceback.format_exception(info.value))
    assert "giving up" in caplog.text
    # a 200 whose body is not JSON but echoes the key: the parse error is redacted as well
    fault._fn = lambda req: text(f"<html>debug: {req.headers.get('authorization')}</html>")
    with pytest.raises(EngineError) as info:
        await eng.generate(MSGS, max_tokens=2)
    assert "non-JSON" in str(info.value) and secret not in str(info.value) and secret not in caplog.text


async def test_default_policy_rides_out_a_server_restart_of_ten_seconds() -> None:
    """Issue 20: the default policy gave up ~3 s after an OpenAI-compatible server died."""
    import socket

    with socket.socket() as s:  # a port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    eng = OpenAIEngine(
        "fault-model",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="sk-test",
        server="vllm",
        tokenizer=WhitespaceTokenizer(),
    )
    assert eng.retry_policy == RetryPolicy()
    t0 = time.perf_counter()
    with pytest.raises(EngineError) as info:
        await eng.generate(MSGS, max_tokens=2)
    # six jittered waits of at least half of 0.5, 1, 2, 4, 8, 8 s
    assert time.perf_counter() - t0 >= 11.5
    assert info.value.attempts == 7  # type: ignore[attr-defined]
    await eng.aclose()
