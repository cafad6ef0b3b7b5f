"""Cancellation that reaches the engine: the torch worker drops jobs whose caller has gone
and flags running ones; the service cancels work on timeout and on client disconnect,
and its metrics say so. The real-model outage test lives in test_server_cancel_real.py."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import httpx
import pytest
from _live_server import live_server

from hoprank.llm.runtime.worker import (
    EngineBusy,
    check_cancelled,
    on_torch_worker,
    run_on_torch_worker,
    worker_stats_snapshot,
)
from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.server import ServerSettings, create_app
from hoprank.types import Document


async def _flush() -> None:
    """Wait until every job submitted so far has left the worker."""
    await asyncio.to_thread(on_torch_worker, lambda: None)


async def test_job_not_started_is_dropped_when_its_task_is_cancelled() -> None:
    gate, started = threading.Event(), threading.Event()
    ran: list[int] = []

    def blocker() -> None:
        started.set()
        gate.wait(30)

    first = asyncio.ensure_future(run_on_torch_worker(blocker))
    assert await asyncio.to_thread(started.wait, 30)
    before = worker_stats_snapshot()
    second = asyncio.ensure_future(run_on_torch_worker(ran.append, 1))
    await asyncio.sleep(0.05)
    assert worker_stats_snapshot().pending == before.pending + 1
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    gate.set()
    await first
    await _flush()
    after = worker_stats_snapshot()
    assert ran == []  # never ran
    assert after.dropped == before.dropped + 1
    assert after.pending == 0


async def test_running_job_sees_the_cancel_flag_and_stops() -> None:
    started = threading.Event()
    loops: list[int] = []

    def forward_loop() -> str:
        started.set()
        for i in range(3000):  # ~30 s unless stopped
            check_cancelled()
            loops.append(i)
            time.sleep(0.01)
        return "finished"

    before = worker_stats_snapshot()
    task = asyncio.ensure_future(run_on_torch_worker(forward_loop))
    assert await asyncio.to_thread(started.wait, 30)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    t0 = time.monotonic()
    await _flush()  # returns once forward_loop has stopped
    assert time.monotonic() - t0 < 10
    after = worker_stats_snapshot()
    assert after.stopped == before.stopped + 1
    assert 0 < after.abandoned_seconds - before.abandoned_seconds < 10
    assert len(loops) < 3000


async def test_worker_queue_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOPRANK_WORKER_MAX_PENDING", "2")
    gate, started = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        gate.wait(30)

    running = asyncio.ensure_future(run_on_torch_worker(blocker))
    assert await asyncio.to_thread(started.wait, 30)
    waiting = [asyncio.ensure_future(run_on_torch_worker(lambda: 1)) for _ in range(2)]
    await asyncio.sleep(0)
    before = worker_stats_snapshot().rejected
    with pytest.raises(EngineBusy):
        await run_on_torch_worker(lambda: 1)
    assert worker_stats_snapshot().rejected == before + 1
    gate.set()
    await running
    assert await asyncio.gather(*waiting) == [1, 1]


class GatedRanker(BaseRanker):
    """Runs its work on the torch worker until cancelled (or ``seconds`` pass)."""

    name = "gated"

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds
        self.started = threading.Event()

    def _spin(self) -> None:
        self.started.set()
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            check_cancelled()
            time.sleep(0.01)

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        await run_on_torch_worker(self._spin)
        return RankerOutput(list(docs))


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_client_disconnect_cancels_the_engine_work() -> None:
    ranker = GatedRanker()
    settings = ServerSettings(rankers=["identity", "gated"], request_timeout_s=600)
    app = create_app(settings, rankers={"gated": ranker})
    body = {"query": "q", "documents": ["a", "b"], "ranker": "gated"}
    before = worker_stats_snapshot()
    with live_server(app) as url:
        with httpx.Client(base_url=url, timeout=1.0) as c, pytest.raises(httpx.ReadTimeout):
            c.post("/v1/rerank", json=body)  # the client gives up after 1 s
        assert ranker.started.is_set()
        deadline = time.monotonic() + 20
        while worker_stats_snapshot().stopped == before.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        after = worker_stats_snapshot()
        assert after.stopped == before.stopped + 1, "the disconnect did not reach the worker"
        with httpx.Client(base_url=url, timeout=30) as c:
            text = c.get("/metrics").text
    assert _metric(text, 'hoprank_requests_cancelled_total{reason="disconnect"}') == 1
    assert _metric(text, "hoprank_requests_abandoned_seconds_total") > 0.5
    assert _metric(text, "hoprank_requests_running") == 0
    assert _metric(text, "hoprank_requests_queued") == 0


def test_timeout_cancels_the_engine_work_and_rejections_are_counted() -> None:
    ranker = GatedRanker()
    settings = ServerSettings(
        rankers=["identity", "gated"], request_timeout_s=1.0, max_concurrency=1, max_queue=0
    )
    app = create_app(settings, rankers={"gated": ranker})
    body = {"query": "q", "documents": ["a", "b"], "ranker": "gated"}
    before = worker_stats_snapshot()
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        results: list[Any] = []
        t = threading.Thread(target=lambda: results.append(c.post("/v1/rerank", json=body)))
        t.start()
        assert ranker.started.wait(30)
        busy = c.post("/v1/rerank", json=body)
        assert busy.status_code == 429 and busy.headers["retry-after"]
        t.join(60)
        assert results[0].status_code == 504
        deadline = time.monotonic() + 20
        while worker_stats_snapshot().stopped == before.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker_stats_snapshot().stopped == before.stopped + 1
        text = c.get("/metrics").text
    assert _metric(text, "hoprank_requests_rejected_total") == 1
    assert _metric(text, 'hoprank_requests_cancelled_total{reason="timeout"}') == 1
    assert _metric(text, "hoprank_engine_jobs_stopped_total") >= 1


async def test_openai_engine_call_is_abandoned_when_its_task_is_cancelled() -> None:
    """Cancelling the task awaiting an OpenAI-compatible call closes its HTTP request and
    frees its concurrency slot at once (the server would have answered after 30 s)."""
    from servers.fault_server import FaultServer, chat_ok, hang

    from hoprank.llm.engines.openai_engine import OpenAIEngine
    from hoprank.llm.engines.scripted import WhitespaceTokenizer
    from hoprank.llm.transport.retry import RetryPolicy

    msgs: list[Any] = [{"role": "user", "content": "hi"}]
    with FaultServer([hang(30.0)], default=chat_ok("quick")) as fs:
        eng = OpenAIEngine(
            "fault-model",
            base_url=fs.base_url,
            api_key="sk-test",
            server="vllm",
            tokenizer=WhitespaceTokenizer(),
            retry=RetryPolicy(max_attempts=3, initial=0.01, max_wait=0.05, total_budget_s=60),
            max_concurrency=1,
        )
        slow = asyncio.ensure_future(eng.generate(msgs, max_tokens=2))
        for _ in range(500):  # the request has reached the server
            if fs.count:
                break
            await asyncio.sleep(0.02)
        assert fs.count == 1
        t0 = time.monotonic()
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        out = await asyncio.wait_for(eng.generate(msgs, max_tokens=2), timeout=20)
        assert out.text == "quick" and time.monotonic() - t0 < 20
        assert fs.count == 2  # the cancelled call was not retried
        await eng.aclose()


class SpinningDecomposer:
    """A decomposer whose model work spins on the torch worker until cancelled."""

    def __init__(self) -> None:
        self.ranker = GatedRanker()

    async def adecompose(self, question: str) -> Any:
        await run_on_torch_worker(self.ranker._spin)
        raise AssertionError("not reached: the client goes away first")


async def _spinning_asker(question: str, *, top_k: int) -> Any:
    await run_on_torch_worker(GatedRanker()._spin)
    raise AssertionError("not reached: the client goes away first")


@pytest.mark.parametrize("route", ["/v1/decompose", "/v1/ask"])
def test_disconnect_cancels_decompose_and_ask(route: str) -> None:
    settings = ServerSettings(rankers=["identity"], request_timeout_s=600)
    app = create_app(settings, decomposer=SpinningDecomposer(), asker=_spinning_asker)
    before = worker_stats_snapshot()
    with live_server(app) as url:
        with httpx.Client(base_url=url, timeout=1.0) as c, pytest.raises(httpx.ReadTimeout):
            c.post(route, json={"question": "who directed Jaws?"})
        deadline = time.monotonic() + 20
        while worker_stats_snapshot().stopped == before.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker_stats_snapshot().stopped == before.stopped + 1
        text = httpx.get(f"{url}/metrics", timeout=30).text
    assert _metric(text, 'hoprank_requests_cancelled_total{reason="disconnect"}') == 1
