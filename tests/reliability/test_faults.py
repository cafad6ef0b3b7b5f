"""Fault matrix: every fault class x every LLM ranker x several window settings, over a
real OpenAIEngine talking HTTP to the scripted fault server on 127.0.0.1.

Invariants checked everywhere:

* a returned ranking is a permutation of the input (nothing lost, nothing duplicated);
* an unusable model answer falls back to the prior order *and says so in the trace*;
* transient faults followed by success are retried, never more than ``max_attempts``
  requests per logical call (counted at the server, per request body);
* an exhausted retry budget raises the typed error (RateLimited / EngineTimeout /
  EngineError), never a made-up ranking;
* malformed answers that cannot improve on a retry are raised at once (one attempt).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
import pytest_asyncio
from _faultkit import (
    CLIENT_TIMEOUT,
    FATAL,
    HANG_TIMEOUT,
    LOGPROB_FAULTS,
    MAX_ATTEMPTS,
    PARTIAL,
    RANKERS,
    TRANSIENT,
    UNUSABLE,
    WINDOWS,
    ModelBehindFaults,
    faults_first,
    make_docs,
    make_engine,
    make_ranker,
    model_steps,
)
from servers.fault_server import FaultServer, RecordedRequest, Reply, rate_limited

from hoprank.errors import EngineError, RateLimited
from hoprank.llm.engines.openai_engine import EngineStats, OpenAIEngine
from hoprank.types import Document, Ranking

# One event loop for the module, so engines (and their HTTP clients) are built once per
# client timeout and reused by every test: the matrix is hundreds of small rankings.
pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]
_ENGINES: dict[float, OpenAIEngine] = {}
_RUNS = itertools.count()


class Switch:
    """The module's fault server script: forwards to the current ``ModelBehindFaults``."""

    def __init__(self) -> None:
        self.model = ModelBehindFaults()

    def __call__(self, req: RecordedRequest) -> Reply:
        return self.model(req)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FaultServer, Switch]]:
    switch = Switch()
    with FaultServer(switch) as fs:
        yield fs, switch


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def _close_engines() -> AsyncIterator[None]:
    yield
    for engine in _ENGINES.values():
        await engine.aclose()
    _ENGINES.clear()


def install(server: tuple[FaultServer, Switch], model: ModelBehindFaults) -> FaultServer:
    fs, switch = server
    fs.requests.clear()
    switch.model = model
    return fs


def assert_permutation(ranking: Ranking, docs: Sequence[Document]) -> None:
    ids = ranking.ids
    assert len(ids) == len(docs) == len(set(ids)), ids
    assert sorted(ids) == sorted(d.id for d in docs)


async def run(
    server: tuple[FaultServer, Switch],
    model: ModelBehindFaults,
    ranker_name: str,
    nws: tuple[int, int, int],
    *,
    timeout: float = CLIENT_TIMEOUT,
) -> tuple[Ranking, Any]:
    """Rank ``n`` documents through the fault server; returns the ranking and the
    engine's counters for this ranking alone (calls, attempts, retries, failures)."""
    fs = install(server, model)
    n, window, step = nws
    engine = _ENGINES.get(timeout)
    if engine is None:
        engine = _ENGINES[timeout] = make_engine(fs.base_url, timeout=timeout)
    before = dataclasses.replace(engine.stats)
    docs = make_docs(n)
    try:
        # a query unique to this run: late requests of an earlier test (cancelled client-side
        # but still in the server's queue) carry other bodies and are not counted as retries
        query = f"which passage is best? (run {next(_RUNS)})"
        ranking = await make_ranker(ranker_name, engine, window, step).arank(query, docs)
    finally:
        delta = EngineStats(
            *(getattr(engine.stats, f.name) - getattr(before, f.name) for f in dataclasses.fields(before))
        )
    assert_permutation(ranking, docs)
    return ranking, delta


_BASELINES: dict[tuple[str, tuple[int, int, int]], list[str]] = {}


async def baseline(
    server: tuple[FaultServer, Switch], ranker_name: str, nws: tuple[int, int, int]
) -> list[str]:
    """The ranking the well-behaved model gives with no faults (computed once)."""
    key = (ranker_name, nws)
    if key not in _BASELINES:
        ranking, _ = await run(server, ModelBehindFaults(), ranker_name, nws)
        assert ranking.fallbacks == 0
        assert ranking.ids != [d.id for d in make_docs(nws[0])], "the fault-free model must reorder"
        _BASELINES[key] = ranking.ids
    return _BASELINES[key]


def _timeout(fault: str) -> float:
    return HANG_TIMEOUT if fault == "hang" else CLIENT_TIMEOUT


def _ids(nws: tuple[int, int, int]) -> str:
    return "n{}-w{}-s{}".format(*nws)


matrix = pytest.mark.parametrize("nws", WINDOWS, ids=_ids)
rankers = pytest.mark.parametrize("ranker_name", RANKERS)


# ----------------------------------------------------------------------------- transient


@matrix
@rankers
@pytest.mark.parametrize("fault", sorted(TRANSIENT))
async def test_transient_faults_then_success_are_retried(
    server: tuple[FaultServer, Switch], fault: str, ranker_name: str, nws: tuple[int, int, int]
) -> None:
    expected = await baseline(server, ranker_name, nws)
    build, _ = TRANSIENT[fault]
    model = ModelBehindFaults(plan=faults_first(MAX_ATTEMPTS - 1, build))
    ranking, stats = await run(server, model, ranker_name, nws, timeout=_timeout(fault))
    assert ranking.ids == expected  # the retried answers are the real ones
    assert ranking.fallbacks == 0
    # every logical call: MAX_ATTEMPTS - 1 faults, then the success; never more
    assert model.calls >= 1 and model.max_attempts_per_call() == MAX_ATTEMPTS
    assert all(n == MAX_ATTEMPTS for n in model.attempts.values())
    assert stats.calls == model.calls and stats.attempts == MAX_ATTEMPTS * model.calls
    assert stats.retries == (MAX_ATTEMPTS - 1) * stats.calls and stats.failures == 0


@matrix
@rankers
@pytest.mark.parametrize("fault", sorted(TRANSIENT))
async def test_exhausted_budget_raises_the_typed_error(
    server: tuple[FaultServer, Switch], fault: str, ranker_name: str, nws: tuple[int, int, int]
) -> None:
    build, error = TRANSIENT[fault]
    model = ModelBehindFaults(always=build)
    with pytest.raises(error) as info:
        await run(server, model, ranker_name, nws, timeout=_timeout(fault))
    err = info.value
    assert isinstance(err, EngineError) and err.retryable
    assert getattr(err, "attempts", None) == MAX_ATTEMPTS
    assert 1 <= model.max_attempts_per_call() <= MAX_ATTEMPTS
    if fault.isdigit():
        assert err.status_code == int(fault)
    assert "sk-test-fault-key" not in str(err)


# ----------------------------------------------------------------------------- not retried


@matrix
@rankers
@pytest.mark.parametrize("fault", sorted(FATAL))
async def test_malformed_answers_raise_at_once(
    server: tuple[FaultServer, Switch], fault: str, ranker_name: str, nws: tuple[int, int, int]
) -> None:
    model = ModelBehindFaults(always=FATAL[fault])
    with pytest.raises(EngineError) as info:
        await run(server, model, ranker_name, nws)
    assert not info.value.retryable
    assert model.max_attempts_per_call() == 1


@matrix
@rankers
@pytest.mark.parametrize("fault", sorted(LOGPROB_FAULTS))
async def test_missing_or_malformed_logprobs(
    server: tuple[FaultServer, Switch], fault: str, ranker_name: str, nws: tuple[int, int, int]
) -> None:
    model = ModelBehindFaults(always=LOGPROB_FAULTS[fault])
    if ranker_name == "rankgpt":  # asks for no logprobs: the text is all it reads
        ranking, _ = await run(server, model, ranker_name, nws)
        assert ranking.ids == await baseline(server, ranker_name, nws) and ranking.fallbacks == 0
        return
    with pytest.raises(EngineError, match="logprob") as info:
        await run(server, model, ranker_name, nws)
    assert not info.value.retryable and model.max_attempts_per_call() == 1


# ----------------------------------------------------------------------------- unusable output


@matrix
@rankers
@pytest.mark.parametrize("fault", sorted(UNUSABLE))
async def test_unusable_answers_fall_back_and_are_traced(
    server: tuple[FaultServer, Switch], fault: str, ranker_name: str, nws: tuple[int, int, int]
) -> None:
    model = ModelBehindFaults(always=UNUSABLE[fault])
    ranking, _ = await run(server, model, ranker_name, nws)
    assert ranking.ids == [d.id for d in make_docs(nws[0])]  # the prior order, nothing invented
    steps = model_steps(ranking)
    assert steps and all(s.fallback and s.error for s in steps), [(s.fallback, s.error) for s in steps]
    assert ranking.fallbacks == len(steps)
    assert model.max_attempts_per_call() == 1  # a 200 with a useless answer is not retried


@matrix
@rankers
@pytest.mark.parametrize("fault", sorted(PARTIAL))
async def test_duplicate_and_out_of_range_ids_keep_a_permutation(
    server: tuple[FaultServer, Switch], fault: str, ranker_name: str, nws: tuple[int, int, int]
) -> None:
    model = ModelBehindFaults(always=PARTIAL[fault])
    ranking, _ = await run(server, model, ranker_name, nws)
    steps = model_steps(ranking)
    assert steps and not any(s.fallback for s in steps)
    first = steps[0]
    if ranker_name == "rankgpt":
        parsed = first.output["parsed"]
        assert parsed["duplicates"] and parsed["out_of_range"]
        assert first.output["order"][:2] == [first.input["ids"][1], first.input["ids"][0]]
    elif ranker_name == "first":
        assert first.output["order"][:2] == [first.input["ids"][1], first.input["ids"][0]]


# ----------------------------------------------------------------------------- retry timing


async def test_retry_after_is_honoured(server: tuple[FaultServer, Switch]) -> None:
    mark = f"retry-after-{next(_RUNS)}"
    model = ModelBehindFaults(plan=lambda i, b: [rate_limited("0.3")] if mark in json.dumps(b) else [])
    fs = install(server, model)
    engine = make_engine(fs.base_url)
    ranking = await make_ranker("rankgpt", engine, 4, 2).arank(mark, make_docs(5))
    await engine.aclose()
    assert ranking.fallbacks == 0
    mine = [r for r in fs.requests if mark.encode() in r.body]
    first, second = (r.received_at for r in mine if r.body == mine[0].body)
    assert second - first >= 0.28  # waited the server's hint, not the tiny backoff


async def test_retry_after_beyond_the_budget_gives_up_at_once(server: tuple[FaultServer, Switch]) -> None:
    from hoprank.llm.transport.retry import RetryPolicy

    mark = f"beyond-budget-{next(_RUNS)}"
    model = ModelBehindFaults(always=lambda b: rate_limited("30"))
    fs = install(server, model)
    engine = make_engine(fs.base_url, retry=RetryPolicy(max_attempts=5, total_budget_s=2.0))
    t0 = time.perf_counter()
    with pytest.raises(RateLimited) as info:
        await make_ranker("first", engine, 4, 2).arank(mark, make_docs(6))
    await engine.aclose()
    assert time.perf_counter() - t0 < 1.5
    assert sum(mark.encode() in r.body for r in fs.requests) == 1
    assert info.value.retry_after == 30


async def test_mixed_transient_faults_across_windows(server: tuple[FaultServer, Switch]) -> None:
    kinds = sorted(k for k in TRANSIENT if k != "hang")  # hangs: their own tests (timing-sensitive)

    def plan(i: int, body: dict[str, Any]) -> list[Reply]:  # call i gets two different faults
        return [TRANSIENT[kinds[i % len(kinds)]][0](body), TRANSIENT[kinds[(i + 3) % len(kinds)]][0](body)]

    for name in RANKERS:
        nws = (25, 20, 10) if name != "pointwise" else (7, 4, 2)
        model = ModelBehindFaults(plan=plan)
        ranking, _ = await run(server, model, name, nws)
        assert ranking.ids == await baseline(server, name, nws)
        assert model.max_attempts_per_call() == MAX_ATTEMPTS
