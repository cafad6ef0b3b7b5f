"""CachedEngine: hits avoid engine calls; the key covers everything that changes outputs."""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from hoprank.errors import CapabilityMissing
from hoprank.evals import CachedEngine
from hoprank.llm.base import LLM, LogprobRequest, chat_renderer, exact_tokenizer
from hoprank.llm.engines.scripted import ScriptedEngine

MSGS: list[Any] = [{"role": "system", "content": "Rank."}, {"role": "user", "content": "q: cats [1] a [2] b"}]


def _engine(name: str = "scripted") -> ScriptedEngine:
    return ScriptedEngine(
        lambda msgs: f"[2] > [1] ({len(msgs[-1]['content'])})",
        logprobs_fn=lambda m, cands, pre: {c: -float(i) for i, c in enumerate(cands)},
        name=name,
    )


async def test_generate_hit_avoids_engine_call(tmp_path: Path) -> None:
    inner = _engine()
    eng = CachedEngine(inner, tmp_path)
    assert isinstance(eng, LLM)
    a = await eng.generate(MSGS, max_tokens=20)
    b = await eng.generate(MSGS, max_tokens=20)
    assert len(inner.calls) == 1
    assert (eng.hits, eng.misses) == (1, 1)
    assert a.text == b.text == "[2] > [1] (19)"
    assert b.usage.prompt_tokens == a.usage.prompt_tokens > 0
    assert b.usage.cached_tokens == b.usage.prompt_tokens and a.usage.cached_tokens == 0
    # a new wrapper on the same folder (a new process) still hits
    again = CachedEngine(_engine(), tmp_path)
    assert (await again.generate(MSGS, max_tokens=20)).text == a.text
    assert again.hits == 1 and not again.inner.calls  # type: ignore[attr-defined]
    assert not glob.glob(f"{tmp_path}/**/*.tmp", recursive=True)  # atomic writes leave no temporaries


@pytest.mark.parametrize(
    "change",
    [
        {"max_tokens": 21},
        {"temperature": 0.7},
        {"stop": ["\n"]},
        {"prefill": "["},
        {"messages": [*MSGS[:1], {"role": "user", "content": "q: dogs [1] a [2] b"}]},
    ],
)
async def test_every_request_field_is_in_the_key(tmp_path: Path, change: dict[str, Any]) -> None:
    inner = _engine()
    eng = CachedEngine(inner, tmp_path)
    base: dict[str, Any] = {"messages": MSGS, "max_tokens": 20}
    await eng.generate(**base)
    await eng.generate(**{**base, **change})
    assert len(inner.calls) == 2 and eng.misses == 2


async def test_engine_identity_is_in_the_key(tmp_path: Path) -> None:
    await CachedEngine(_engine("model-a"), tmp_path).generate(MSGS, max_tokens=5)
    other = _engine("model-b")
    await CachedEngine(other, tmp_path).generate(MSGS, max_tokens=5)
    assert len(other.calls) == 1


async def test_logprob_batch_sends_only_misses(tmp_path: Path) -> None:
    inner = _engine()
    eng = CachedEngine(inner, tmp_path)
    r1 = LogprobRequest(messages=MSGS, candidates=["A", "B"], prefill="[")
    r2 = LogprobRequest(messages=MSGS, candidates=["A", "B", "C"], prefill="[")
    r3 = LogprobRequest(messages=MSGS[:1], candidates=["A", "B"], prefill="[")
    first = await eng.next_token_logprobs_batch([r1, r2])
    assert len(inner.calls) == 2
    second = await eng.next_token_logprobs_batch([r2, r3, r1])
    assert len(inner.calls) == 3 and inner.calls[-1]["messages"] == MSGS[:1]  # only r3 went to the engine
    assert second[0].logprobs == first[1].logprobs and second[2].logprobs == first[0].logprobs
    single = await eng.next_token_logprobs(MSGS, candidates=["A", "B"], prefill="[")  # same key as r1
    assert single.logprobs == first[0].logprobs and len(inner.calls) == 3


async def test_unreadable_entry_is_a_miss_and_is_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inner = _engine()
    eng = CachedEngine(inner, tmp_path)
    await eng.generate(MSGS, max_tokens=3)
    (entry,) = glob.glob(f"{tmp_path}/**/*.json", recursive=True)
    with open(entry, "w") as f:  # noqa: ASYNC230 - a test poking the cache by hand
        f.write('{"format": 1, "value": {"te')  # torn by hand
    with caplog.at_level(logging.WARNING):
        out = await eng.generate(MSGS, max_tokens=3)
    assert "unreadable cache entry" in caplog.text
    assert len(inner.calls) == 2 and out.text.startswith("[2]")
    with open(entry) as f:  # noqa: ASYNC230
        assert json.load(f)["value"]["text"] == out.text


async def test_forwards_uncached_attributes(tmp_path: Path) -> None:
    inner = _engine()
    eng = CachedEngine(inner, tmp_path)
    assert eng.tokenizer is inner.tokenizer and eng.capabilities == inner.capabilities
    assert eng.describe() == inner.describe()
    # no __getattr__ forwarding: the capability protocols are explicit, the rest is on .inner
    assert not hasattr(eng, "calls") and eng.inner.calls is inner.calls
    assert chat_renderer(eng) is None and exact_tokenizer(eng) is None
    with pytest.raises(CapabilityMissing, match="render"):
        eng.render(MSGS)
    with pytest.raises(CapabilityMissing, match="attention"):
        await eng.attention_rows("prefix", ["suffix"])
    with pytest.raises(CapabilityMissing, match="attention"):
        _ = eng.attention_window


@pytest.mark.slow
async def test_real_model_cache_hits(tmp_path: Path, smollm2_engine: Any) -> None:
    """SmolLM2: the second identical call comes from disk (the model is not called)."""
    eng = CachedEngine(smollm2_engine, tmp_path)
    msgs: list[Any] = [{"role": "user", "content": "Say one word about cats."}]
    a = await eng.generate(msgs, max_tokens=8)
    lp = await eng.next_token_logprobs(msgs, candidates=["A", "B"], prefill="[")
    desc = smollm2_engine.describe()
    assert desc["gguf_sha256"]  # the key pins the weights

    class Boom:
        def __getattr__(self, item: str) -> Any:
            raise AssertionError(f"engine called: {item}")

    eng.inner = Boom()  # type: ignore[assignment]
    b = await eng.generate(msgs, max_tokens=8)
    lp2 = await eng.next_token_logprobs(msgs, candidates=["A", "B"], prefill="[")
    assert b.text == a.text and lp2.logprobs == lp.logprobs
    assert eng.hits == 2 and eng.misses == 2


async def test_keys_and_layout_are_stable(tmp_path: Path) -> None:
    """Entries written before CachedEngine moved to hoprank.llm keep hitting: the keys and
    the ``<key[:2]>/<key>.json`` layout of a fixed request are pinned."""
    inner = ScriptedEngine(
        lambda msgs: "[2] > [1]",
        logprobs_fn=lambda m, cands, pre: {c: -float(i) for i, c in enumerate(cands)},
        name="scripted",
    )
    eng = CachedEngine(inner, tmp_path)
    await eng.generate(MSGS, max_tokens=20)
    await eng.next_token_logprobs(MSGS, candidates=["A", "B"], prefill="[")
    written = sorted(p[len(str(tmp_path)) + 1 :] for p in glob.glob(f"{tmp_path}/**/*.json", recursive=True))
    assert written == [
        "2d/2df80134ae9315405fd48467cbd245e0a194e3d2b4acd1479f77b5b38eace7cc.json",
        "eb/eb523f58614ea5d08de02e27c79be10d1cdea6d50e927fea896fef4f55c2f1ca.json",
    ]
