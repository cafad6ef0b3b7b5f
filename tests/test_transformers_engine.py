"""TransformersEngine on real weights: SmolLM2-135M for plumbing, Qwen2.5-Coder-0.5B where
behaviour matters (pointwise yes/no on real TREC DL passages)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hoprank.errors import ContextOverflow, InvalidInput, ModelPackError
from hoprank.llm import Capability, LogprobRequest, Message, load_engine
from hoprank.llm.models.packs import PACKS

LABELS = list("ABCDE")
RANK_MSGS: list[Message] = [
    {"role": "system", "content": "You rank passages by relevance. Answer like [B] > [A] > [C]."},
    {
        "role": "user",
        "content": "Query: capital of France\n[A] Paris is the capital of France.\n[B] Bananas are yellow.\n"
        "[C] Berlin is in Germany.\n[D] The Seine flows through Paris.\n[E] Cats sleep a lot.\nRank them.",
    },
]
FRANCE: list[Message] = [
    {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
]


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def test_identity_and_describe(smollm2_engine: Any) -> None:
    e = smollm2_engine
    assert e.capabilities == frozenset(
        {
            Capability.GENERATE,
            Capability.TOKEN_LOGPROBS,
            Capability.PREFILL,
            Capability.ATTENTION,
            Capability.RENDER,
            Capability.EXACT_TOKENIZER,
        }
    )
    d = e.describe()
    assert d["model"] == "smollm2-135m"
    assert d["gguf_sha256"] == PACKS["smollm2-135m"].sha256
    assert d["device"] == "cpu" and d["dtype"] in {"bfloat16", "float32"}
    assert d["transformers_version"]
    assert 2048 <= e.context_window <= 32768
    json.dumps(d)  # serialisable for run manifests


def test_options_come_as_keywords_or_a_config_and_load_on_the_given_worker() -> None:
    """``TransformersEngineConfig`` validates the options before anything loads; the
    engine runs its loading (and every model call) on the worker it is given."""
    from hoprank.errors import ConfigError
    from hoprank.llm.engines.transformers_engine import TransformersEngine, TransformersEngineConfig
    from hoprank.llm.runtime.worker import TorchWorker, default_worker

    with pytest.raises(ConfigError, match="TransformersEngine"):
        TransformersEngine("no-such-model", dtyp="fp32")  # a typo in a keyword
    with pytest.raises(InvalidInput, match="max_batch_size"):
        TransformersEngine("no-such-model", max_batch_size=0)
    cfg = TransformersEngineConfig(dtype="fp32", threads=2)
    assert TransformersEngineConfig.build(cfg, {"max_batch_size": 4}).model_dump(
        include={"dtype", "max_batch_size"}
    ) == {
        "dtype": "fp32",
        "max_batch_size": 4,
    }
    own = TorchWorker(name="hoprank-test-engine")
    with pytest.raises(ModelPackError):
        TransformersEngine("no-such-model", config=cfg, worker=own)
    assert own.stats().submitted == 1 and own is not default_worker()
    own.shutdown()


def test_engines_share_the_default_worker(smollm2_engine: Any) -> None:
    from hoprank.llm.runtime.worker import default_worker

    assert smollm2_engine.worker is default_worker()
    assert smollm2_engine.config.threads == 2


def test_tokenizer(smollm2_engine: Any) -> None:
    tok = smollm2_engine.tokenizer
    text = "Multi-hop retrieval: find the bridge entity, then the answer. Ünïcödé ✓"
    ids = tok.encode(text)
    assert tok.count(text) == len(ids) > 10
    assert tok.decode(ids) == text
    assert tok.truncate(text, 1000) == text
    assert tok.truncate(text, 0) == ""
    for n in (1, 5, 11):
        cut = tok.truncate(text, n)
        assert text.startswith(cut) and 0 < len(cut) < len(text)
        assert tok.count(cut) <= n
    assert tok.encode("") == []


def test_truncate_many_equals_truncate_one_by_one(smollm2_engine: Any, datasets_dir: Path) -> None:
    tok = smollm2_engine.tokenizer
    with open(datasets_dir / "trec-dl-2019-passage" / "corpus.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in itertools.islice(f, 30)]
    texts += ["", "short", "Ünïcödé ✓ " * 40]
    for n in (1, 7, 40, 10_000):
        cuts = tok.truncate_many(texts, n)
        assert cuts == [tok.truncate(t, n) for t in texts]
        for text, cut in zip(texts, cuts, strict=True):
            assert text.startswith(cut) and tok.count(cut) <= n
            assert (cut == text) == (tok.count(text) <= n)
    assert tok.truncate_many(texts, 0) == [""] * len(texts)


def test_remembered_prompt_encoding_is_exact_and_private(smollm2_engine: Any) -> None:
    tok = smollm2_engine.tokenizer
    long_text = "The bridge entity links the two hops. " * 120  # above the remembered length
    first = tok.encode(long_text)
    assert first == smollm2_engine.hf_tokenizer.encode(long_text, add_special_tokens=False)
    first.append(-1)  # a caller mutating its list cannot corrupt the next answer
    again = tok.encode(long_text)
    assert again == first[:-1] and again is not first
    assert smollm2_engine._encode_prompt(long_text) == again


async def test_generate_text_usage_and_stop(smollm2_engine: Any) -> None:
    e = smollm2_engine
    c = await e.generate(FRANCE, max_tokens=24)
    assert c.text.strip() and c.model == "smollm2-135m"
    assert c.finish_reason in {"stop", "length"}
    assert c.usage.llm_calls == 1
    assert c.usage.prompt_tokens == len(
        e.hf_tokenizer(e.render(FRANCE), add_special_tokens=False)["input_ids"]
    )
    assert 1 <= c.usage.completion_tokens <= 24
    assert "<|im_end|>" not in c.text
    # Greedy is deterministic; a stop string taken from the output cuts it there.
    words = c.text.split()
    assert len(words) >= 3
    stop = " " + words[2]
    again = await e.generate(FRANCE, max_tokens=24, stop=[stop, "\n\n\n"])
    assert again.text == c.text[: c.text.index(stop)]
    assert again.finish_reason == "stop"
    assert again.usage.completion_tokens <= c.usage.completion_tokens
    short = await e.generate(FRANCE, max_tokens=2)
    assert short.usage.completion_tokens <= 2 and short.finish_reason in {"length", "stop"}


async def test_generate_with_prefill_continues_the_turn(smollm2_engine: Any) -> None:
    e = smollm2_engine
    prefill = "The capital of France is"
    assert e.render(FRANCE, prefill).endswith("<|im_start|>assistant\n" + prefill)
    c = await e.generate(FRANCE, max_tokens=8, prefill=prefill)
    plain = await e.generate(FRANCE, max_tokens=8)
    assert c.text and not c.text.startswith(prefill)
    assert c.usage.prompt_tokens > plain.usage.prompt_tokens
    sampled = await e.generate(FRANCE, max_tokens=8, temperature=0.9)
    assert sampled.usage.completion_tokens >= 1


async def test_label_logprobs_finite_normalisable_and_stable(smollm2_engine: Any) -> None:
    import torch

    e = smollm2_engine
    r = await e.next_token_logprobs(RANK_MSGS, candidates=LABELS, prefill="[")
    assert set(r.logprobs) == set(LABELS) and r.missing == []
    assert all(math.isfinite(v) and v <= 0 for v in r.logprobs.values())
    total = _logsumexp(list(r.logprobs.values()))
    assert total <= 1e-6  # a subset of the full vocabulary
    renorm = [math.exp(v - total) for v in r.logprobs.values()]
    assert abs(sum(renorm) - 1) < 1e-6
    assert len(r.raw_top) == 10 and list(r.raw_top.values()) == sorted(r.raw_top.values(), reverse=True)
    for label, v in r.logprobs.items():
        if label in r.raw_top:
            assert abs(r.raw_top[label] - v) < 1e-5
    assert r.usage.llm_calls == 1 and r.usage.prompt_tokens > 50 and r.usage.completion_tokens == 0
    again = await e.next_token_logprobs(RANK_MSGS, candidates=LABELS, prefill="[")
    assert again.logprobs == r.logprobs
    # Same numbers as a bare full-sequence forward of the model (whose bf16 logits are
    # rounded; the engine recomputes the LM head in fp32).
    assert e.describe()["logits"] == ("float32" if e.dtype == torch.float32 else "fp32 head")
    ids = e.hf_tokenizer(e.render(RANK_MSGS, "["), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        bare = torch.log_softmax(e.model(**ids).logits[0, -1].float(), -1)
    for label, v in r.logprobs.items():
        assert abs(float(bare[e.tokenizer.encode(label)[0]]) - v) < 0.2
    low = e.forward_last_logits(ids["input_ids"], ids["attention_mask"])
    assert low.shape == (1, bare.shape[0]) and int(low[0].argmax()) == int(bare.argmax())


async def test_multi_token_or_empty_candidates_are_rejected(smollm2_engine: Any) -> None:
    with pytest.raises(InvalidInput, match="'Paris is'"):
        await smollm2_engine.next_token_logprobs(FRANCE, candidates=["A", "Paris is"])
    with pytest.raises(InvalidInput):
        await smollm2_engine.next_token_logprobs(FRANCE, candidates=[])
    with pytest.raises(InvalidInput):
        await smollm2_engine.generate([], max_tokens=4)


def _batch_requests() -> list[LogprobRequest]:
    long_msgs: list[Message] = [
        {"role": "user", "content": RANK_MSGS[1]["content"] + " Consider each passage carefully." * 5}
    ]
    return [
        LogprobRequest(messages=RANK_MSGS, candidates=LABELS, prefill="["),
        LogprobRequest(messages=long_msgs, candidates=LABELS, prefill="["),
        LogprobRequest(messages=FRANCE, candidates=["The", "Paris", "A"]),
    ]


def _assert_batch_matches_single(engine: Any, tol: float) -> None:
    reqs = _batch_requests()
    batch = engine.next_token_logprobs_batch_sync(reqs)
    assert len(batch) == len(reqs)
    for req, got in zip(reqs, batch, strict=True):
        single = engine.next_token_logprobs_sync(req.messages, candidates=req.candidates, prefill=req.prefill)
        assert max(got.logprobs, key=got.logprobs.__getitem__) == max(
            single.logprobs, key=single.logprobs.__getitem__
        )
        for c in req.candidates:
            assert abs(got.logprobs[c] - single.logprobs[c]) < tol, (c, got.logprobs, single.logprobs)
        assert got.usage.prompt_tokens == single.usage.prompt_tokens


def test_batch_equals_single_runs(smollm2_engine: Any) -> None:
    smollm2_engine.max_batch_size = 2  # two chunks: one padded pair, one single
    try:
        _assert_batch_matches_single(smollm2_engine, tol=0.2)  # bf16 accumulation order
    finally:
        smollm2_engine.max_batch_size = 16


def test_batch_equals_single_runs_fp32_tightly() -> None:
    from hoprank.llm.engines.transformers_engine import TransformersEngine

    e = TransformersEngine("smollm2-135m", dtype="fp32", threads=2)
    assert e.describe()["dtype"] == "float32"
    _assert_batch_matches_single(e, tol=2e-3)  # left padding + position ids are exact


async def test_context_overflow(smollm2_engine: Any) -> None:
    e = smollm2_engine
    huge: list[Message] = [{"role": "user", "content": "word " * (e.context_window + 10)}]
    with pytest.raises(ContextOverflow) as exc:
        await e.generate(huge, max_tokens=4)
    assert exc.value.context_window == e.context_window and exc.value.prompt_tokens
    assert exc.value.prompt_tokens > e.context_window
    with pytest.raises(ContextOverflow):
        await e.next_token_logprobs(huge, candidates=["A"])
    with pytest.raises(ContextOverflow):
        await e.next_token_logprobs_batch([LogprobRequest(messages=huge, candidates=["A"])])
    with pytest.raises(ContextOverflow):  # fits alone, not with the requested completion
        await e.generate(FRANCE, max_tokens=e.context_window)


async def test_concurrent_calls_are_serialised_and_equal(smollm2_engine: Any) -> None:
    e = smollm2_engine
    single = await e.next_token_logprobs(RANK_MSGS, candidates=LABELS, prefill="[")
    many = await asyncio.gather(
        *[e.next_token_logprobs(RANK_MSGS, candidates=LABELS, prefill="[") for _ in range(3)],
        e.generate(FRANCE, max_tokens=4),
    )
    for r in many[:3]:
        assert r.logprobs == single.logprobs  # type: ignore[union-attr]
    # The sync facade also works from inside a running loop.
    assert e.next_token_logprobs_sync(RANK_MSGS, candidates=LABELS, prefill="[").logprobs == single.logprobs


async def test_attention_rows_delegates_to_attention_module(smollm2_engine: Any) -> None:
    pytest.importorskip("hoprank.llm.runtime.attention")
    e = smollm2_engine
    prefix = e.render([{"role": "user", "content": "Passage one is about cats. Passage two is about Paris."}])
    rows = await e.attention_rows(prefix, ["capital of France", "N/A"], layers=[0, 1])
    assert len(rows.rows) == 2 and rows.layers == [0, 1]
    assert all(len(r) == rows.prefix_tokens == len(rows.prefix_offsets) for r in rows.rows)


def test_import_is_light() -> None:
    code = (
        "import sys, hoprank, hoprank.llm\n"
        "from hoprank.llm import load_engine, Capability, list_packs, DEFAULT_MODEL\n"
        "list_packs()\n"
        "heavy = [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_load_engine_specs() -> None:
    with pytest.raises(InvalidInput):
        load_engine("openai:")
    with pytest.raises(ModelPackError):
        load_engine("transformers:no-such-pack")
    with pytest.raises(ModelPackError):
        load_engine("/no/such/model.bin")


# ----------------------------------------------------------------------------- Qwen 0.5B


def _hotpot_pairs(datasets_dir: Path, n: int) -> list[tuple[str, str, str]]:
    """(question, supporting paragraph containing the answer, paragraph supporting another
    question): real HotpotQA paragraphs, an obviously relevant and an off-topic one."""
    d = datasets_dir / "hotpotqa-dev-distractor-500"
    corpus = {r["id"]: r for r in map(json.loads, (d / "corpus.jsonl").open(encoding="utf-8"))}
    queries = [json.loads(line) for line in (d / "queries.jsonl").open(encoding="utf-8")]
    text = lambda r: f"{r['title']}: {' '.join(r['text'].split()[:120])}"  # noqa: E731
    pairs = []
    for q, nxt in itertools.pairwise(queries):
        answer = q["answer"].lower()
        sup = [s for s in q["supporting"] if answer in corpus[s]["text"].lower()]
        if sup and answer not in {"yes", "no"}:
            pairs.append((q["text"], text(corpus[sup[0]]), text(corpus[nxt["supporting"][0]])))
        if len(pairs) == n:
            break
    return pairs


def _yes_no(query: str, passage: str) -> LogprobRequest:
    return LogprobRequest(
        messages=[
            {
                "role": "user",
                "content": f"Query: {query}\nPassage: {passage}\n"
                "Does the passage answer the query? Answer Yes or No.",
            }
        ],
        candidates=["Yes", "No"],
    )


@pytest.mark.slow
async def test_qwen05_pointwise_yes_no_prefers_relevant(qwen05_engine: Any, datasets_dir: Path) -> None:
    """log P(Yes) - log P(No) is higher for the answer paragraph than for an off-topic one.
    The 0.5B model's margins are small (tenths of a nat), so this asks for a clear
    majority over 12 real pairs (chance would pass 9 of 12 with probability 7%)."""
    pairs = _hotpot_pairs(datasets_dir, 12)
    assert len(pairs) == 12
    reqs = [r for q, rel, irr in pairs for r in (_yes_no(q, rel), _yes_no(q, irr))]
    out = await qwen05_engine.next_token_logprobs_batch(reqs)
    scores = [o.logprobs["Yes"] - o.logprobs["No"] for o in out]
    wins = sum(scores[2 * i] > scores[2 * i + 1] for i in range(len(pairs)))
    assert wins >= 9, scores
    assert sum(scores[0::2]) > sum(scores[1::2])
    single = await qwen05_engine.next_token_logprobs(
        reqs[0].messages, candidates=reqs[0].candidates, prefill=reqs[0].prefill
    )
    assert abs(single.logprobs["Yes"] - out[0].logprobs["Yes"]) < 0.2


def test_sdpa_backends_restrict_the_kernels_and_keep_the_numbers(smollm2_engine: Any) -> None:
    from hoprank.errors import ConfigError
    from hoprank.llm.engines.transformers_engine import TransformersEngine

    with pytest.raises(ConfigError, match="sdpa_backends"):
        TransformersEngine("smollm2-135m", sdpa_backends=["flash", "cudnnn"])
    math_only = TransformersEngine("smollm2-135m", sdpa_backends="math", dtype=smollm2_engine.dtype)
    assert math_only.describe()["sdpa_backends"] == ["MATH"]
    assert smollm2_engine.describe()["sdpa_backends"] is None
    a = smollm2_engine.next_token_logprobs_sync(RANK_MSGS, candidates=LABELS, prefill="[")
    b = math_only.next_token_logprobs_sync(RANK_MSGS, candidates=LABELS, prefill="[")
    assert a.logprobs.keys() == b.logprobs.keys()
    assert max(abs(a.logprobs[k] - b.logprobs[k]) for k in LABELS) < 0.05
    import torch
    from torch.nn.attention import SDPBackend

    def flags() -> tuple[bool, bool, int]:
        order = torch._C._get_sdp_priority_order()
        return torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled(), order[0]

    before = flags()
    inside = math_only._locked(flags)  # what every model call of the engine runs under
    assert inside == (False, True, int(SDPBackend.MATH))
    assert flags() == before  # restored after the call
    assert smollm2_engine._locked(flags) == before
