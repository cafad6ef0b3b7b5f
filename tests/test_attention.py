"""hoprank.llm.attention: attention rows from a shared prefix, checked against eager
attention of the full sequence on a real model (SmolLM2-135M)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hoprank.errors import InvalidInput  # noqa: E402
from hoprank.llm import attention as attn  # noqa: E402


@pytest.fixture(scope="module")
def fp32_engine() -> Any:
    from hoprank.llm.transformers_engine import TransformersEngine

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
