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

from hoprank.llm.runtime.worker import EngineBusy, TorchWorker, check_cancelled, default_worker
from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.server import ServerSettings, create_app
from hoprank.types import Document


async def _flush(worker: TorchWorker) -> None:
    """Wait until every job submitted so far has left the worker."""
    await asyncio.to_thread(worker.call, lambda: None)


async def test_job_not_started_is_dropped_when_its_task_is_cancelled() -> None:
    worker = TorchWorker()
    gate, started = threading.Event(), threading.Event()
    ran: list[int] = []

    def blocker() -> None:
        started.set()
        gate.wait(30)

    first = asyncio.ensure_future(worker.run(blocker))
    assert await asyncio.to_thread(started.wait, 30)
    second = asyncio.ensure_future(worker.run(ran.append, 1))
    await asyncio.sleep(0.05)
    assert worker.stats().pending == 1
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    gate.set()
    await first
    await _flush(worker)
    after = worker.stats()
    assert ran == []  # never ran
    assert (after.dropped, after.pending, after.completed, after.submitted) == (1, 0, 2, 3)
    worker.shutdown()


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

    worker = TorchWorker()
    task = asyncio.ensure_future(worker.run(forward_loop))
    assert await asyncio.to_thread(started.wait, 30)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    t0 = time.monotonic()
    await _flush(worker)  # returns once forward_loop has stopped
    assert time.monotonic() - t0 < 10
    after = worker.stats()
    assert after.stopped == 1
    assert 0 < after.abandoned_seconds < 10
    assert len(loops) < 3000
    worker.shutdown()


@pytest.mark.parametrize("bound", ["env", "argument"])
async def test_worker_queue_is_bounded(monkeypatch: pytest.MonkeyPatch, bound: str) -> None:
    if bound == "env":
        monkeypatch.setenv("HOPRANK_WORKER_MAX_PENDING", "2")
        worker = TorchWorker()
    else:
        monkeypatch.setenv("HOPRANK_WORKER_MAX_PENDING", "100")
        worker = TorchWorker(max_pending=2)
    assert worker.max_pending == 2
    gate, started = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        gate.wait(30)

    running = asyncio.ensure_future(worker.run(blocker))
    assert await asyncio.to_thread(started.wait, 30)
    waiting = [asyncio.ensure_future(worker.run(lambda: 1)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(EngineBusy):
        await worker.run(lambda: 1)
    assert worker.stats().rejected == 1
    gate.set()
    await running
    assert await asyncio.gather(*waiting) == [1, 1]
    worker.shutdown()


async def test_workers_are_scoped_and_a_job_on_its_own_worker_runs_inline() -> None:
    """Two workers have their own thread and counters; ``call`` from a job of the same
    worker runs inline (no deadlock on the one thread), from another worker it hops."""
    a, b = TorchWorker(name="hoprank-test-a"), TorchWorker(name="hoprank-test-b")

    def where() -> str:
        return threading.current_thread().name

    def nested() -> tuple[str, str, str]:
        return where(), a.call(where), b.call(where)

    outer, inline, hopped = await a.run(nested)
    assert outer == inline and outer.startswith("hoprank-test-a") and hopped.startswith("hoprank-test-b")
    assert (a.stats().completed, b.stats().completed) == (1, 1)
    a.shutdown()
    b.shutdown()


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
        await default_worker().run(self._spin)
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
    before = default_worker().stats()
    with live_server(app) as url:
        with httpx.Client(base_url=url, timeout=1.0) as c, pytest.raises(httpx.ReadTimeout):
            c.post("/v1/rerank", json=body)  # the client gives up after 1 s
        assert ranker.started.is_set()
        deadline = time.monotonic() + 20
        while default_worker().stats().stopped == before.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        after = default_worker().stats()
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
    before = default_worker().stats()
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
        while default_worker().stats().stopped == before.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert default_worker().stats().stopped == before.stopped + 1
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
        await default_worker().run(self.ranker._spin)
        raise AssertionError("not reached: the client goes away first")


async def _spinning_asker(question: str, *, top_k: int) -> Any:
    await default_worker().run(GatedRanker()._spin)
    raise AssertionError("not reached: the client goes away first")


@pytest.mark.parametrize("route", ["/v1/decompose", "/v1/ask"])
def test_disconnect_cancels_decompose_and_ask(route: str) -> None:
    settings = ServerSettings(rankers=["identity"], request_timeout_s=600)
    app = create_app(settings, decomposer=SpinningDecomposer(), asker=_spinning_asker)
    before = default_worker().stats()
    with live_server(app) as url:
        with httpx.Client(base_url=url, timeout=1.0) as c, pytest.raises(httpx.ReadTimeout):
            c.post(route, json={"question": "who directed Jaws?"})
        deadline = time.monotonic() + 20
        while default_worker().stats().stopped == before.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert default_worker().stats().stopped == before.stopped + 1
        text = httpx.get(f"{url}/metrics", timeout=30).text
    assert _metric(text, 'hoprank_requests_cancelled_total{reason="disconnect"}') == 1
