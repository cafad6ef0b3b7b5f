"""OpenAIEngine against real HTTP servers on 127.0.0.1: the scripted fault server for
request shapes and failure handling, a real llama.cpp server (SmolLM2-135M) for the
real thing."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import pytest
from servers.fault_server import (
    MISSING,
    FaultServer,
    Reply,
    chat_body,
    chat_ok,
    empty_choices,
    hang,
    logprobs_block,
    proxy,
    status,
    text,
)

from hoprank.errors import ConfigError, ContextOverflow, EngineError, InvalidInput
from hoprank.llm.base import LLM, Capability, LogprobRequest
from hoprank.llm.engines.openai_engine import OpenAIEngine
from hoprank.llm.engines.scripted import WhitespaceTokenizer
from hoprank.llm.models.llamacpp_server import LlamaCppServer
from hoprank.llm.transport.retry import RetryPolicy

pytest_plugins = ["servers.fixtures"]

MSGS: list[Any] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Rank A, B, C."}]
FAST = RetryPolicy(max_attempts=3, initial=0.01, max_wait=0.05, total_budget_s=20)


def make(urls: str | list[str], server: Any = "vllm", **kw: Any) -> OpenAIEngine:
    kw.setdefault("tokenizer", WhitespaceTokenizer())
    kw.setdefault("retry", FAST)
    return OpenAIEngine("fault-model", base_url=urls, api_key="sk-test", server=server, **kw)


# ----------------------------------------------------------------------------- request shapes


async def test_generate_request_and_response(fault: FaultServer) -> None:
    fault.push(chat_ok("Paris", usage=(21, 2), model="served-name", finish_reason="stop"))
    eng = make(fault.base_url)
    assert isinstance(eng, LLM)
    out = await eng.generate(MSGS, max_tokens=7, temperature=0.3, stop=["\n"])
    assert out.text == "Paris" and out.finish_reason == "stop" and out.model == "served-name"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.llm_calls) == (21, 2, 1)
    body = fault.requests[0].json
    assert fault.requests[0].path == "/v1/chat/completions"
    assert body["model"] == "fault-model" and body["messages"] == MSGS
    assert (body["max_tokens"], body["temperature"], body["stop"]) == (7, 0.3, ["\n"])
    assert "logprobs" not in body


@pytest.mark.parametrize("content", ["broken \ud800 text", None])
async def test_unencodable_or_non_string_content_is_invalid_input(fault: FaultServer, content: Any) -> None:
    eng = make(fault.base_url)
    with pytest.raises(InvalidInput, match="message 0"):
        await eng.generate([{"role": "user", "content": content}], max_tokens=3)
    with pytest.raises(InvalidInput, match="message 0"):
        await eng.next_token_logprobs([{"role": "user", "content": content}], candidates=["A"])
    assert fault.requests == []  # rejected before anything is sent


async def test_usage_counted_locally_when_server_omits_it(fault: FaultServer) -> None:
    fault.push(chat_ok("one two three", usage=None))
    out = await make(fault.base_url).generate(MSGS, max_tokens=5)
    assert out.usage.completion_tokens == 3 and out.usage.prompt_tokens == 6  # whitespace words


@pytest.mark.parametrize("server", ["vllm", "llamacpp", "openai"])
async def test_prefill_per_server(fault: FaultServer, server: str) -> None:
    fault.push(chat_ok("[B] > [A]" if server == "llamacpp" else "B] > [A]"))
    eng = make(fault.base_url, server=server)
    out = await eng.generate(MSGS, max_tokens=9, prefill="[")
    body = fault.requests[0].json
    if server == "openai":
        assert Capability.PREFILL not in eng.capabilities
        assert body["messages"] == MSGS  # nothing appended: the OpenAI API cannot continue a turn
        assert "continue_final_message" not in body
    else:
        assert Capability.PREFILL in eng.capabilities
        assert body["messages"][-1] == {"role": "assistant", "content": "["}
        assert out.text == "B] > [A]"  # llama.cpp's echo of the prefix is stripped
    if server == "vllm":
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    if server == "llamacpp":
        assert "continue_final_message" not in body


async def test_logprobs_request_and_label_forms(fault: FaultServer) -> None:
    top = {"[B": -0.4, " A": -1.3, "A": -2.5, "C": -2.0, "B": -3.0, "hello": -4.0}
    fault.push(chat_ok("[B", logprobs=logprobs_block(top)))
    res = await make(fault.base_url).next_token_logprobs(MSGS, candidates=["A", "B", "C", "D"], prefill="[")
    body = fault.requests[0].json
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1
    assert body["temperature"] == 0.0
    assert res.logprobs == {"A": -1.3, "B": -0.4, "C": -2.0}  # max over X / " X" / "[X"
    assert res.missing == ["D"]
    assert res.raw_top["hello"] == -4.0 and res.usage.llm_calls == 1


async def test_space_markers_are_normalised(fault: FaultServer) -> None:
    fault.push(chat_ok("x", logprobs=logprobs_block({"ĠYes": -0.2, "▁No": -1.7})))
    res = await make(fault.base_url).next_token_logprobs(MSGS, candidates=["Yes", "No"])
    assert res.logprobs == {"Yes": -0.2, "No": -1.7}


BAD_LOGPROBS = {
    "absent": MISSING,
    "null": None,
    "content-not-list": {"content": "garbage"},
    "content-empty": {"content": []},
    "no-top": {"content": [{"token": "A", "logprob": -0.1}]},
    "top-empty": {"content": [{"token": "A", "logprob": -0.1, "top_logprobs": []}]},
    "logprob-string": {"content": [{"token": "A", "logprob": "-0.1", "top_logprobs": []}]},
    "entry-not-object": {"content": [{"token": "A", "logprob": -0.1, "top_logprobs": ["A"]}]},
    "positive": {
        "content": [{"token": "A", "logprob": 3.0, "top_logprobs": [{"token": "A", "logprob": 3.0}]}]
    },
    "nan": {"content": [{"token": "A", "logprob": math.nan, "top_logprobs": [{"token": "A", "logprob": 0}]}]},
}


@pytest.mark.parametrize("case", sorted(BAD_LOGPROBS))
async def test_missing_or_malformed_logprobs_raise(fault: FaultServer, case: str) -> None:
    fault.push(chat_ok("A", logprobs=BAD_LOGPROBS[case]))
    with pytest.raises(EngineError) as info:
        await make(fault.base_url).next_token_logprobs(MSGS, candidates=["A", "B"])
    assert not info.value.retryable and fault.count == 1
    assert "logprob" in str(info.value)


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        (empty_choices(), "no choices"),
        (text("<html>gateway page</html>"), "non-JSON"),
        (Reply(body=[1, 2]), "not a JSON object"),  # type: ignore[arg-type]
    ],
)
async def test_malformed_bodies_raise(fault: FaultServer, reply: Reply, fragment: str) -> None:
    fault.push(reply)
    with pytest.raises(EngineError, match=fragment) as info:
        await make(fault.base_url).generate(MSGS, max_tokens=3)
    assert not info.value.retryable and fault.count == 1


async def test_logit_bias_for_openai_models(fault: FaultServer) -> None:
    fault.push(chat_ok("A", logprobs=logprobs_block({"A": -0.1, "B": -2.5})))
    eng = OpenAIEngine("gpt-4o", base_url=fault.base_url, api_key="sk-test", logit_bias=50.0)
    assert eng.tokenizer.name == "tiktoken:o200k_base"
    await eng.next_token_logprobs(MSGS, candidates=["A", "B"])
    bias = fault.requests[0].json["logit_bias"]
    # one form per candidate, the one written first without a prefill: "[A" before "A"
    expected = set()
    for c in "AB":
        forms = [eng.tokenizer.encode(f) for f in (f"[{c}", c, f" {c}")]
        expected.add(str(next(ids[0] for ids in forms if len(ids) == 1)))
    assert set(bias) == expected and len(bias) == 2 and set(bias.values()) == {50.0}
    assert "allowed_token_ids" not in fault.requests[0].json


async def test_vllm_allowed_token_ids(fault: FaultServer) -> None:
    from hoprank.llm.tokenizers.tiktoken_offline import TiktokenTokenizer

    tok = TiktokenTokenizer("cl100k_base")
    fault.push(chat_ok("A", logprobs=logprobs_block({"A": -0.1})))
    eng = make(fault.base_url, server="vllm", tokenizer=tok, restrict_candidates=True)
    await eng.next_token_logprobs(MSGS, candidates=["A", "B"], prefill="[")
    body = fault.requests[0].json
    assert set(body["allowed_token_ids"]) >= {tok.encode("A")[0], tok.encode("B")[0]}
    assert body["continue_final_message"] is True


# ----------------------------------------------------------------------------- concurrency


async def test_round_robin_and_failover() -> None:
    with FaultServer(default=status(503)) as bad, FaultServer(default=chat_ok("ok")) as good:
        eng = make([bad.base_url, good.base_url], balance="round_robin")
        assert (await eng.generate(MSGS, max_tokens=2)).text == "ok"  # the retry went to the other one
        assert (bad.count, good.count) == (1, 1)
        assert eng.stats.retries == 1
        assert eng.describe()["hosts"] == [f"127.0.0.1:{bad.port}", f"127.0.0.1:{good.port}"]


async def test_least_in_flight_avoids_the_slow_endpoint() -> None:
    with FaultServer(default=hang(2.0)) as slow, FaultServer(default=hang(0.05)) as fast:
        eng = make([slow.base_url, fast.base_url], max_concurrency=2)
        outs = await asyncio.gather(*(eng.generate(MSGS, max_tokens=2) for _ in range(8)))
        assert all(o.text == "late" for o in outs)
        assert slow.count + fast.count == 8 and fast.count >= 6


async def test_concurrency_is_bounded(fault: FaultServer) -> None:
    eng = make(fault.base_url, max_concurrency=2)
    reqs = [LogprobRequest(messages=MSGS, candidates=["A"]) for _ in range(6)]
    fault.default = Reply(body=chat_body("A", logprobs=logprobs_block({"A": -0.1})), delay=0.25)
    t0 = time.perf_counter()
    res = await eng.next_token_logprobs_batch(reqs)
    assert len(res) == 6 and all(r.logprobs == {"A": -0.1} for r in res)
    assert time.perf_counter() - t0 >= 3 * 0.25 * 0.95  # 6 requests, 2 at a time


async def test_batch_failure_raises(fault: FaultServer) -> None:
    good = Reply(body=chat_body("A", logprobs=logprobs_block({"A": -0.1})))
    fault.push(good, status(400, "bad request"), good)
    reqs = [LogprobRequest(messages=MSGS, candidates=["A"]) for _ in range(3)]
    with pytest.raises(EngineError, match="400"):
        await make(fault.base_url, max_concurrency=1).next_token_logprobs_batch(reqs)


async def test_batch_with_several_failures_leaves_no_unretrieved_exception(fault: FaultServer) -> None:
    import gc

    # lone surrogates are refused before any request: every task fails in the same loop tick
    bad: list[Any] = [{"role": "user", "content": "Rank \ud800 A."}]
    seen: list[dict[str, Any]] = []
    gc.collect()  # earlier tests' garbage is not this test's business
    loop = asyncio.get_running_loop()
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    try:
        reqs = [LogprobRequest(messages=bad, candidates=["A"]) for _ in range(4)]
        with pytest.raises(InvalidInput):
            await make(fault.base_url, max_concurrency=4).next_token_logprobs_batch(reqs)
        await asyncio.sleep(0.05)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(old)
    assert fault.count == 0
    ours = [
        c
        for c in seen
        if "never retrieved" in str(c.get("message", "")) and isinstance(c.get("exception"), InvalidInput)
    ]
    assert not ours, ours


async def test_async_context_manager_closes_clients(fault: FaultServer) -> None:
    fault.default = chat_ok("hi")
    async with make(fault.base_url) as eng:
        assert (await eng.generate(MSGS, max_tokens=2)).text == "hi"
    assert (await eng.generate(MSGS, max_tokens=2)).text == "hi"  # fresh clients after close


def test_sync_facade_runs_on_fresh_loops(fault: FaultServer) -> None:
    fault.default = Reply(body=chat_body("A", logprobs=logprobs_block({"A": -0.1, "B": -2.0})))
    eng = make(fault.base_url)
    assert eng.generate_sync(MSGS, max_tokens=2).text == "A"
    assert eng.next_token_logprobs_sync(MSGS, candidates=["B"]).logprobs == {"B": -2.0}
    batch = eng.next_token_logprobs_batch_sync([LogprobRequest(messages=MSGS, candidates=["A"])] * 2)
    assert [r.logprobs for r in batch] == [{"A": -0.1}] * 2
    assert fault.count == 4


# ----------------------------------------------------------------------------- configuration


def test_keys_and_config(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="API key"):
        OpenAIEngine("gpt-4o")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-123456")
    eng = OpenAIEngine("gpt-4o")
    assert "sk-from-env" not in repr(eng) + str(eng.describe())
    assert eng.describe()["hosts"] == ["api.openai.com"]
    local = OpenAIEngine("x", base_url="http://user:pw@127.0.0.1:9/v1", api_key=None, server="llamacpp")
    assert "pw" not in str(local.describe()) and "pw" not in repr(local)
    with caplog.at_level(logging.WARNING):
        assert local.tokenizer.name == "tiktoken:o200k_base"
    with pytest.raises(ConfigError):
        OpenAIEngine("x", base_url="http://127.0.0.1:9/v1", server="ollama")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        local.generate_sync([], max_tokens=3)


# ----------------------------------------------------------------------------- real llama.cpp


LABELS = ["A", "B", "C", "D"]
RANK_MSGS: list[Any] = [
    {
        "role": "user",
        "content": "Which passage is about cats? Answer with its letter in brackets.\n"
        "[A] Dogs bark.\n[B] Cats purr.\n[C] Cars drive.\n[D] Birds fly.",
    }
]


@pytest.fixture(scope="module")
def smol(llamacpp_server: LlamaCppServer) -> OpenAIEngine:
    return OpenAIEngine("smollm2", base_url=llamacpp_server.base_url, server="llamacpp", timeout=120)


async def test_llamacpp_generate(smol: OpenAIEngine) -> None:
    out = await smol.generate(
        [{"role": "user", "content": "What is the capital of France? One word."}], max_tokens=8
    )
    assert out.text.strip() and out.finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens > 10 and 0 < out.usage.completion_tokens <= 8
    assert out.model == "smollm2-135m"


async def test_llamacpp_context_overflow_is_typed(smol: OpenAIEngine) -> None:
    with pytest.raises(ContextOverflow) as info:
        await smol.generate([{"role": "user", "content": "word " * 3000}], max_tokens=4)
    err = info.value
    assert err.context_window == 2048 and err.prompt_tokens is not None and err.prompt_tokens > 2048
    assert err.attempts == 1  # type: ignore[attr-defined]


async def test_llamacpp_next_token_logprobs(smol: OpenAIEngine) -> None:
    res = await smol.next_token_logprobs(RANK_MSGS, candidates=LABELS, prefill="[")
    assert len(res.logprobs) >= 2, res
    assert all(math.isfinite(v) and v <= 0 for v in res.logprobs.values())
    assert set(res.logprobs) | set(res.missing) == set(LABELS)
    assert len(res.raw_top) >= 10 and res.usage.prompt_tokens > 20
    # deterministic at temperature 0: a batch gives the same numbers
    batch = await smol.next_token_logprobs_batch(
        [LogprobRequest(messages=RANK_MSGS, candidates=LABELS, prefill="[")] * 2
    )
    for r in batch:
        assert r.logprobs.keys() == res.logprobs.keys()
        for k, v in r.logprobs.items():
            assert v == pytest.approx(res.logprobs[k], abs=1e-3)


async def test_engine_keeps_requesting_logprobs(llamacpp_server: LlamaCppServer) -> None:
    """Fails if the engine stops asking for logprobs/top_logprobs (rank_llm's silent bug):
    a recording proxy sits between the engine and the real llama.cpp server."""
    with FaultServer(default=proxy(llamacpp_server.url)) as rec:
        eng = OpenAIEngine("smollm2", base_url=rec.base_url, server="llamacpp", timeout=120)
        res = await eng.next_token_logprobs(RANK_MSGS, candidates=LABELS, prefill="[")
        assert rec.count == 1
        sent = rec.requests[0].json
        assert sent["logprobs"] is True and sent["top_logprobs"] >= 5 and sent["max_tokens"] == 1
        assert sent["messages"][-1] == {"role": "assistant", "content": "["}
        got = rec.requests[0].response_json
        assert rec.requests[0].response_status == 200
        top = got["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        assert len(top) == sent["top_logprobs"]
        assert res.raw_top == pytest.approx(
            {e["token"]: max(x["logprob"] for x in top if x["token"] == e["token"]) for e in top}
            | {
                got["choices"][0]["logprobs"]["content"][0]["token"]: got["choices"][0]["logprobs"][
                    "content"
                ][0]["logprob"]
            }
        )


def test_prompt_tokens_counts_what_the_server_template_adds(smollm2_engine: Any) -> None:
    """With the served model's HF tokenizer the count is the rendered chat template
    (exactly what a local engine counts); with only tiktoken, a reserve is held back for
    the default system prompt a server's template may insert."""
    from hoprank.llm.tokenizers.hf_tokenizer import HFTokenizer
    from hoprank.rankers.passages import TEMPLATE_RESERVE, prompt_tokens

    msgs: list[Any] = [{"role": "user", "content": "Rank these passages for the query."}]
    hf = OpenAIEngine(
        "smol", base_url="http://127.0.0.1:9/v1", tokenizer=HFTokenizer(smollm2_engine.hf_tokenizer)
    )
    assert {Capability.RENDER, Capability.EXACT_TOKENIZER} <= hf.capabilities
    assert hf.render(msgs, "[") == smollm2_engine.render(msgs, "[")
    assert prompt_tokens(hf, msgs, "[") == prompt_tokens(smollm2_engine, msgs, "[")
    assert prompt_tokens(hf, msgs) > hf.tokenizer.count(msgs[0]["content"]) + 6
    plain = OpenAIEngine("gpt-4o", base_url="http://127.0.0.1:9/v1")
    content = plain.tokenizer.count(msgs[0]["content"])
    assert prompt_tokens(plain, msgs) == content + 6 + TEMPLATE_RESERVE
    with_system: list[Any] = [{"role": "system", "content": "Be brief."}, *msgs]
    assert prompt_tokens(plain, with_system) == content + plain.tokenizer.count("Be brief.") + 12
