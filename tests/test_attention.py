"""hoprank.llm.runtime.attention: attention rows from a shared prefix, checked against eager
attention of the full sequence on a real model (SmolLM2-135M)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hoprank.errors import InvalidInput  # noqa: E402
from hoprank.llm.runtime import attention as attn  # noqa: E402


@pytest.fixture(scope="module")
def fp32_engine() -> Any:
    from hoprank.llm.engines.transformers_engine import TransformersEngine

    return TransformersEngine("smollm2-135m", dtype="float32", threads=2)


@pytest.fixture(scope="module")
def prompt(datasets_dir: Path, fp32_engine: Any) -> tuple[str, list[str]]:
    """A chat-rendered prefix holding three real DL19 passages, and two query suffixes."""
    d = datasets_dir / "trec-dl-2019-passage"
    with open(d / "corpus.jsonl", encoding="utf-8") as f:
        texts = [" ".join(json.loads(next(f))["text"].split()[:40]) for _ in range(3)]
    body = "Here are some paragraphs:" + "".join(f"\n\n[{i + 1}] {t}" for i, t in enumerate(texts))
    full = fp32_engine.render(
        [{"role": "user", "content": body + "\n\n@@Query: what are the fields of anthropology?"}]
    )
    cut = full.index("@@")
    prefix, suffix = full[:cut], full[cut + 2 :]
    return prefix, [suffix, suffix.replace("what are the fields of anthropology?", "N/A")]


def _eager_reference(engine: Any, prefix: str, suffix: str, layers: list[int] | None = None) -> np.ndarray:
    """Rows from ``output_attentions=True`` on the whole sequence (no cache), summed the same way."""
    tok, model = engine.hf_tokenizer, engine.model
    p = tok(prefix, add_special_tokens=False)["input_ids"]
    s = tok(suffix, add_special_tokens=False)["input_ids"]
    with attn._attn_implementation(model, "eager"), torch.inference_mode():
        out = model(torch.tensor([p + s]), output_attentions=True, use_cache=False)
    sel = range(len(out.attentions)) if layers is None else layers
    total = sum(out.attentions[i][0].float()[:, len(p) :, : len(p)].sum(dim=(0, 1)) for i in sel)
    return np.asarray(total.numpy(), dtype=np.float64)


def _count_forward_tokens(model: Any) -> tuple[list[int], Any]:
    """Record the number of tokens each forward of the model's embedding layer sees."""
    seen: list[int] = []
    handle = model.get_input_embeddings().register_forward_hook(
        lambda m, i, o: seen.append(int(i[0].shape[-1]))
    )
    return seen, handle


def test_rows_equal_eager_attention(fp32_engine: Any, prompt: tuple[str, list[str]]) -> None:
    prefix, suffixes = prompt
    seen, handle = _count_forward_tokens(fp32_engine.model)
    try:
        rows = attn.attention_rows(fp32_engine, prefix, suffixes)
    finally:
        handle.remove()
    n_prefix = len(fp32_engine.hf_tokenizer(prefix, add_special_tokens=False)["input_ids"])
    n_suffix = [len(fp32_engine.hf_tokenizer(s, add_special_tokens=False)["input_ids"]) for s in suffixes]
    # the prefix is encoded once; each suffix pass encodes only its own tokens
    assert seen == [n_prefix, *n_suffix]
    assert rows.prefix_tokens == n_prefix and rows.tokens_encoded == n_suffix
    assert max(rows.tokens_encoded) < rows.prefix_tokens / 10
    assert rows.method == "capture"
    assert rows.layers == list(range(fp32_engine.model.config.num_hidden_layers))
    assert len(rows.prefix_offsets) == len(rows.prefix_ids) == n_prefix
    assert rows.usage.cached_tokens == 2 * n_prefix and rows.usage.llm_calls == 3
    for row, suffix in zip(rows.rows, suffixes, strict=True):
        ref = _eager_reference(fp32_engine, prefix, suffix)
        np.testing.assert_allclose(np.asarray(row), ref, rtol=1e-3, atol=1e-3)
    # the two suffixes differ, so the rows must too (the second pass is not a replay)
    assert not np.allclose(rows.rows[0], rows.rows[1], atol=1e-3)


def test_selected_layers_and_eager_path(fp32_engine: Any, prompt: tuple[str, list[str]]) -> None:
    prefix, suffixes = prompt
    n = fp32_engine.model.config.num_hidden_layers
    rows = attn.attention_rows(fp32_engine, prefix, suffixes[:1], layers=[0, -1, 0])
    assert rows.layers == [0, n - 1]
    ref = _eager_reference(fp32_engine, prefix, suffixes[0], layers=[0, n - 1])
    np.testing.assert_allclose(np.asarray(rows.rows[0]), ref, rtol=1e-3, atol=1e-3)
    eager = attn.attention_rows(fp32_engine, prefix, suffixes[:1], layers=[0, n - 1], method="eager")
    assert eager.method == "eager"
    np.testing.assert_allclose(np.asarray(eager.rows[0]), ref, rtol=1e-3, atol=1e-3)
    # the model is left with its own attention implementation
    assert fp32_engine.model.config._attn_implementation == "sdpa"


def test_cache_is_restored_between_suffixes(
    fp32_engine: Any, prompt: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix, suffixes = prompt
    both = attn.attention_rows(fp32_engine, prefix, suffixes, layers=[1, 2])
    alone = attn.attention_rows(fp32_engine, prefix, suffixes[1:], layers=[1, 2])
    np.testing.assert_allclose(both.rows[1], alone.rows[0], rtol=1e-4, atol=1e-4)
    # caches that cannot be cropped are copied instead: same rows
    monkeypatch.setattr(attn, "_croppable", lambda cache: False)
    copied = attn.attention_rows(fp32_engine, prefix, suffixes, layers=[1, 2])
    np.testing.assert_allclose(copied.rows, both.rows, rtol=1e-4, atol=1e-4)


def test_row_mass_matches_softmax(fp32_engine: Any, prompt: tuple[str, list[str]]) -> None:
    """Each suffix token's attention sums to 1 per head and layer; the prefix gets most of it."""
    prefix, suffixes = prompt
    rows = attn.attention_rows(fp32_engine, prefix, suffixes[:1], layers=[3])
    heads = fp32_engine.model.config.num_attention_heads
    total = float(np.sum(rows.rows[0]))
    assert 0.5 * heads * rows.tokens_encoded[0] < total <= heads * rows.tokens_encoded[0] + 1e-3


async def test_engine_method_bf16(smollm2_engine: Any, prompt: tuple[str, list[str]]) -> None:
    """Through the engine (worker thread, engine lock, bf16): close to fp32 eager rows."""
    prefix, suffixes = prompt
    rows = await smollm2_engine.attention_rows(prefix, suffixes)
    assert rows.method == "capture" and len(rows.rows) == 2
    ref = _eager_reference(smollm2_engine, prefix, suffixes[0])
    corr = np.corrcoef(np.asarray(rows.rows[0]), ref)[0, 1]
    assert corr > 0.999
    assert smollm2_engine.model.config._attn_implementation == "sdpa"


def test_bad_input(fp32_engine: Any) -> None:
    with pytest.raises(InvalidInput):
        attn.attention_rows(fp32_engine, "prefix", [])
    with pytest.raises(InvalidInput):
        attn.attention_rows(fp32_engine, "", ["suffix"])
    with pytest.raises(InvalidInput):
        attn.attention_rows(fp32_engine, "prefix", [""])
    with pytest.raises(InvalidInput):
        attn.attention_rows(fp32_engine, "prefix", ["suffix"], layers=[999])


@pytest.fixture(scope="module")
def sliding_engine(fp32_engine: Any) -> Any:
    """SmolLM2's tokenizer and chat template on a tiny random Mistral with a sliding window
    of 192 tokens (no real sliding-window weights exist offline; the cache layout, not the
    weights, is what is tested)."""
    import copy

    from transformers import AutoModelForCausalLM, MistralConfig

    cfg = MistralConfig(
        vocab_size=len(fp32_engine.hf_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=192,
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    eng = copy.copy(fp32_engine)
    eng.model = AutoModelForCausalLM.from_config(cfg).eval()
    return eng


def test_sliding_window_models_refuse_rows_past_the_window(fp32_engine: Any, sliding_engine: Any) -> None:
    """Past the sliding window the cache no longer holds the first prefix tokens: a typed
    ContextOverflow, not rows silently shorter than the prefix."""
    from hoprank.errors import ContextOverflow

    assert attn.attention_span(sliding_engine.model) == 192 and sliding_engine.attention_window == 192
    assert attn.attention_span(fp32_engine.model) is None
    assert fp32_engine.attention_window == fp32_engine.context_window
    short = attn.attention_rows(sliding_engine, "word " * 20, ["a query"])
    assert len(short.rows[0]) == short.prefix_tokens
    with pytest.raises(ContextOverflow, match="sliding window of 192") as e:
        attn.attention_rows(sliding_engine, "word " * 300, ["a query"])
    assert e.value.context_window == 192


def test_icr_sizes_its_passes_to_the_sliding_window(sliding_engine: Any, datasets_dir: Path) -> None:
    """ICR on a sliding-window model splits the list into passes that fit the window."""
    from hoprank.rankers.icr import ICRRanker
    from hoprank.types import Document

    with open(datasets_dir / "trec-dl-2019-passage" / "corpus.jsonl", encoding="utf-8") as f:
        docs = [
            Document(id=str(i), text=" ".join(json.loads(next(f))["text"].split()[:25])) for i in range(8)
        ]
    ranking = ICRRanker(sliding_engine, max_doc_tokens=40).rank("what is anthropology?", docs)
    assert sorted(d.id for d in ranking.documents) == [d.id for d in docs]
    windows = [s for s in ranking.trace if s.kind == "icr"]
    assert len(windows) > 1  # one pass of eight would overflow the 192-token window
    assert all(s.input["prefix_tokens"] + max(s.input["suffix_tokens_encoded"]) <= 192 for s in windows)
