"""Micro-batching: concurrent single requests share batched calls; results unchanged."""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rank_data import dl19_query

from hoprank.errors import CapabilityMissing, ContextOverflow, InvalidInput
from hoprank.llm.base import LLM, Capability, LogprobRequest, Message, chat_renderer, has_capability
from hoprank.llm.engines.batching import BatchingEngine, MicroBatcher
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.rankers import FIRST
from hoprank.types import Document

# ----------------------------------------------------------------------------- MicroBatcher


class Doubler:
    """A batched function that records each call's items."""

    def __init__(self, delay: float = 0.01) -> None:
        self.calls: list[list[int]] = []
        self.delay = delay

    async def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        await asyncio.sleep(self.delay)
        if any(i < 0 for i in items):
            raise ContextOverflow(f"negative item in {items}")
        return [2 * i for i in items]


async def test_concurrent_submits_share_one_call() -> None:
    fn = Doubler()
    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=16, max_wait_s=0.01)
    out = await asyncio.gather(*(b.submit(i) for i in range(10)))
    assert out == [2 * i for i in range(10)]
    assert fn.calls == [list(range(10))]
    assert b.stats.calls == 1 and b.stats.requests == 10 and b.stats.mean_batch == 10


async def test_max_batch_size_splits_and_late_arrivals_queue_behind_the_running_batch() -> None:
    fn = Doubler(delay=0.05)
    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=4, max_wait_s=0.01)
    first = [asyncio.ensure_future(b.submit(i)) for i in range(10)]
    await asyncio.sleep(0.02)  # the first batch of 4 is running now
    late = [asyncio.ensure_future(b.submit(i)) for i in range(10, 13)]
    out = await asyncio.gather(*first, *late)
    assert out == [2 * i for i in range(13)]
    assert all(len(c) <= 4 for c in fn.calls)
    assert sorted(i for c in fn.calls for i in c) == list(range(13))
    assert len(fn.calls) == 4  # 13 requests, at most 4 per call, no call smaller than needed
    assert fn.calls[0] == [0, 1, 2, 3]


async def test_a_failing_request_fails_alone() -> None:
    fn = Doubler()
    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=8, max_wait_s=0.01)
    results = await asyncio.gather(*(b.submit(i) for i in (1, -1, 3)), return_exceptions=True)
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], ContextOverflow)
    assert b.stats.fallbacks == 1
    assert fn.calls[0] == [1, -1, 3] and sorted(map(tuple, fn.calls[1:])) == [(-1,), (1,), (3,)]


async def test_cancelled_callers_are_dropped_before_sending() -> None:
    fn = Doubler()
    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=8, max_wait_s=0.05)
    keep = asyncio.ensure_future(b.submit(1))
    drop = asyncio.ensure_future(b.submit(2))
    await asyncio.sleep(0)
    drop.cancel()
    assert await keep == 2
    assert fn.calls == [[1]]


async def test_wrong_result_count_is_an_error() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:1]

    b: MicroBatcher[int, int] = MicroBatcher(short, max_batch_size=8, max_wait_s=0.0)
    with pytest.raises(Exception, match="1 results for 2"):
        await b.submit_many([1, 2])


def test_bad_settings() -> None:
    with pytest.raises(InvalidInput):
        MicroBatcher(Doubler(), max_batch_size=0)
    with pytest.raises(InvalidInput):
        MicroBatcher(Doubler(), max_wait_s=-1)


class _Rendering(ScriptedEngine):
    """A scripted engine that declares and implements RENDER."""

    def render(self, messages: Sequence[Message], prefill: str = "") -> str:
        return "|".join(m["content"] for m in messages) + prefill


async def test_wrapper_declares_the_inner_capabilities_explicitly() -> None:
    plain = BatchingEngine(ScriptedEngine(["x"]))
    assert not hasattr(plain, "calls")  # no __getattr__ forwarding
    assert chat_renderer(plain) is None and not has_capability(plain, Capability.ATTENTION)
    with pytest.raises(CapabilityMissing, match="render"):
        plain.render([{"role": "user", "content": "a"}])
    with pytest.raises(CapabilityMissing, match="attention"):
        await plain.attention_rows("p", ["s"])
    caps = frozenset({Capability.GENERATE, Capability.RENDER})
    wrapped = BatchingEngine(_Rendering(["x"], capabilities=caps))
    renderer = chat_renderer(wrapped)
    assert renderer is not None and renderer.render([{"role": "user", "content": "a"}], "[") == "a["


def test_separate_event_loops_are_kept_apart() -> None:
    fn = Doubler()
    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=8, max_wait_s=0.01)
    out: dict[int, list[int]] = {}

    def worker(k: int) -> None:
        async def go() -> list[int]:
            return list(await asyncio.gather(*(b.submit(10 * k + i) for i in range(3))))

        out[k] = asyncio.run(go())

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {k: [2 * (10 * k + i) for i in range(3)] for k in range(3)}
    for call in fn.calls:  # never a mix of two loops' requests
        assert len({i // 10 for i in call}) == 1


# ----------------------------------------------------------------------------- BatchingEngine

LINE = re.compile(r"^\[(\w+)\] (.*)$", re.M)


def length_logprobs(messages: Sequence[Message], candidates: Sequence[str], prefill: str) -> dict[str, float]:
    """Deterministic scores from the passage texts: longer passage = more relevant."""
    found = dict(LINE.findall(messages[-1]["content"]))
    return {lab: -5.0 + 0.01 * len(found.get(lab, "")) for lab in candidates}


class CountingScripted(ScriptedEngine):
    def __init__(self) -> None:
        super().__init__(logprobs_fn=length_logprobs)
        self.batch_calls: list[int] = []

    async def next_token_logprobs_batch(self, requests: Sequence[LogprobRequest]) -> Any:
        self.batch_calls.append(len(requests))
        return await super().next_token_logprobs_batch(requests)


def _dl19_items(datasets_dir: Path, n: int, k: int) -> list[tuple[str, list[Document]]]:
    return [dl19_query(datasets_dir, k=k, index=i) for i in range(n)]


async def test_first_arank_many_batches_windows_of_different_queries(datasets_dir: Path) -> None:
    items = _dl19_items(datasets_dir, 6, 20)
    plain = CountingScripted()
    expected = [await FIRST(plain, window=10).arank(q, d) for q, d in items]
    base = CountingScripted()
    engine = BatchingEngine(base, max_batch_size=8)
    assert isinstance(engine, LLM) and Capability.TOKEN_LOGPROBS in engine.capabilities
    got = await FIRST(engine, window=10).arank_many(items, concurrency=6)
    assert [r.ids for r in got] == [r.ids for r in expected]
    windows = sum(len(r.trace) for r in got)
    assert windows == 18  # 3 windows per query (20 docs, window 10, step 5)
    assert sum(base.batch_calls) == windows
    assert len(base.batch_calls) <= 4 and max(base.batch_calls) == 6  # 6 queries in lockstep
    assert engine.stats.calls == len(base.batch_calls)
    assert engine.describe()["micro_batching"]["max_batch_size"] == 8


async def test_calibrated_windows_are_batched_too(datasets_dir: Path) -> None:
    items = _dl19_items(datasets_dir, 3, 10)
    base = CountingScripted()
    engine = BatchingEngine(base, max_batch_size=16)
    got = await FIRST(engine, window=10, calibrate=True, shifts=2).arank_many(items, concurrency=3)
    assert base.batch_calls == [12]  # 3 queries x 2 rotations x (query + N/A)
    assert all(r.usage.llm_calls == 4 for r in got)


# ----------------------------------------------------------------------------- real model


@pytest.mark.slow
async def test_batched_first_on_smollm2_matches_unbatched_with_fewer_forwards(
    smollm2_engine: Any, datasets_dir: Path
) -> None:
    items = _dl19_items(datasets_dir, 4, 10)
    forwards: list[int] = []
    original = smollm2_engine._forward_rows

    def counting(rows: list[list[int]]) -> Any:
        forwards.append(len(rows))
        return original(rows)

    smollm2_engine._forward_rows = counting
    try:
        ranker = FIRST(smollm2_engine, window=10, max_passage_tokens=48)
        single = [await ranker.arank(q, d) for q, d in items]
        n_single = len(forwards)
        forwards.clear()
        engine = BatchingEngine(smollm2_engine, max_batch_size=4, max_wait_ms=20)
        batched = await FIRST(engine, window=10, max_passage_tokens=48).arank_many(items, concurrency=4)
    finally:
        del smollm2_engine._forward_rows
    assert n_single == 4
    assert forwards == [4]  # one forward for the 4 queries' windows
    for a, b in zip(single, batched, strict=True):
        sa, sb = a.trace[0].output["scores"], b.trace[0].output["scores"]
        assert sa.keys() == sb.keys() and len(sa) == 10
        for lab in sa:  # bf16: padding changes the accumulation order, not the result
            assert math.isclose(sa[lab], sb[lab], abs_tol=0.2), (lab, sa, sb)
        assert a.usage.prompt_tokens == b.usage.prompt_tokens
    assert engine.stats.calls == 1 and engine.stats.requests == 4


def test_right_padded_rows_equal_single_forwards(smollm2_engine: Any) -> None:
    """One right-padded forward without a padding mask gives every row's own last-token
    output: decoder + fp32 head (the engine's path) and the model's own logits."""
    import torch

    from hoprank.llm.runtime.forward import last_token_outputs

    e = smollm2_engine
    texts = ["The capital of France is", "One, two, three, four, five, six, seven, eight, nine,", "Hi"]
    rows = [e.tokenizer.encode(t) for t in texts]
    assert len({len(r) for r in rows}) == 3
    single = torch.cat([e.forward_last_logits(torch.tensor([r])) for r in rows])

    def batched() -> tuple[Any, Any]:
        with torch.inference_mode():
            head = e._forward_rows(rows)
            own = last_token_outputs(e.model, rows, pad_id=e._pad_id, device=e.device, hidden=False)
        return head, own.float()

    head, own = e.worker.call(batched)
    assert head.shape == single.shape == own.shape
    assert [int(x) for x in head.argmax(-1)] == [int(x) for x in single.argmax(-1)]
    lp = torch.log_softmax(head, -1) - torch.log_softmax(single, -1)
    top = single.topk(20, dim=-1).indices  # the tokens that matter; bf16 noise below 0.2
    assert float(lp.gather(1, top).abs().max()) < 0.2
    assert [int(x) for x in own.argmax(-1)] == [int(x) for x in single.argmax(-1)]
    with pytest.raises(InvalidInput):
        last_token_outputs(e.model, [[1], []], pad_id=0, device=e.device, hidden=False)
