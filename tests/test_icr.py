"""ICRRanker: layout, exact passage token spans, scoring, windows; real models on DL19."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hoprank.errors import CapabilityMissing, ConfigError, PromptError
from hoprank.llm.base import AttentionRows, Capability, Message
from hoprank.llm.engines.scripted import ScriptedEngine, WhitespaceTokenizer
from hoprank.rankers.icr import _DOC, _SPLIT, ICRRanker, _parse
from hoprank.types import Document

DL19 = "trec-dl-2019-passage"


def _load(datasets_dir: Path) -> tuple[dict[str, Any], dict[str, str], dict[str, list[str]]]:
    d = datasets_dir / DL19
    with open(d / "corpus.jsonl", encoding="utf-8") as f:
        corpus = {r["id"]: r for r in map(json.loads, f)}
    with open(d / "queries.jsonl", encoding="utf-8") as f:
        queries = {r["id"]: r["text"] for r in map(json.loads, f)}
    run: dict[str, list[str]] = {}
    with open(d / "run.bm25.tsv", encoding="utf-8") as f:
        for line in f:
            qid, doc, *_ = line.split("\t")
            run.setdefault(qid, []).append(doc)
    return corpus, queries, run


def _doc(corpus: dict[str, Any], doc_id: str, words: int = 45) -> Document:
    r = corpus[doc_id]
    return Document(id=doc_id, text=" ".join(r["text"].split()[:words]), title=r.get("title") or None)


@pytest.fixture(scope="module")
def dl19(datasets_dir: Path) -> tuple[dict[str, Any], dict[str, str], dict[str, list[str]]]:
    return _load(datasets_dir)


class _FakeAttentionEngine:
    """No model: a chat template that wraps the user turn, and scripted attention rows."""

    name = "fake-attention"
    capabilities = frozenset({Capability.ATTENTION, Capability.RENDER})
    context_window = 4096
    attention_window = 4096

    def __init__(self) -> None:
        self.tokenizer = WhitespaceTokenizer()

    def render(self, messages: Sequence[Message], prefill: str = "") -> str:
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"

    async def attention_rows(
        self, prefix: str, suffixes: Sequence[str], *, layers: Sequence[int] | None = None
    ) -> AttentionRows:  # pragma: no cover - not used by these unit tests
        raise NotImplementedError


# ----------------------------------------------------------------------------- unit tests


def test_capability_missing_on_engines_without_attention() -> None:
    with pytest.raises(CapabilityMissing, match="in-process transformers engine") as e:
        ICRRanker(ScriptedEngine(["x"]))
    assert e.value.capability == "attention" and e.value.engine == "scripted"
    # claiming the capability without the method is not enough
    with pytest.raises(CapabilityMissing):
        ICRRanker(ScriptedEngine(["x"], capabilities=frozenset({Capability.ATTENTION})))
    # nor are the methods without the declared capability
    undeclared = _FakeAttentionEngine()
    undeclared.capabilities = frozenset({Capability.ATTENTION})  # type: ignore[misc]
    with pytest.raises(CapabilityMissing, match="render"):
        ICRRanker(undeclared)


def test_config_errors() -> None:
    eng = _FakeAttentionEngine()
    with pytest.raises(ConfigError):
        ICRRanker(eng, calibrate=False, mask_outliers=True)
    with pytest.raises(ConfigError):
        ICRRanker(eng, chunk_docs=1)
    with pytest.raises(ConfigError):
        ICRRanker(eng, max_doc_tokens=0)
    bad = {"name": "x", "version": 1, "variables": ["passages", "query"], "messages": []}
    with pytest.raises(PromptError):
        ICRRanker(eng, prompt=bad)


def test_layout_parse_and_template_checks() -> None:
    eng = _FakeAttentionEngine()
    r = ICRRanker(eng)
    lay = r._layout("what is x?", ["alpha beta", "gamma"])
    assert lay.prefix.startswith("<user>Here are some paragraphs:")
    assert lay.suffix.startswith("Please find information") and lay.suffix.endswith("x?</user><assistant>")
    assert [lay.prefix[a:b] for a, b in lay.spans] == ["alpha beta", "gamma"]
    assert _DOC not in lay.prefix + lay.suffix and _SPLIT not in lay.prefix + lay.suffix
    assert lay.prefix + lay.suffix == (  # snapshot of the rendered icr@1 prompt
        "<user>Here are some paragraphs:\n\n[1] alpha beta\n\n[2] gamma\n\n"
        "Please find information that are relevant to the following query in the paragraphs above."
        "\n\nQuery: what is x?</user><assistant>"
    )
    # a template that puts passages after `split` or lacks it is refused
    after = {
        "name": "bad",
        "version": 1,
        "variables": ["passages", "query", "split"],
        "messages": [
            {"role": "user", "content": "{{ split }}{% for p in passages %}{{ p }}{% endfor %} {{ query }}"}
        ],
    }
    with pytest.raises(PromptError, match="before `split`"):
        ICRRanker(eng, prompt=after)._layout("q", ["a", "b"])
    with pytest.raises(PromptError, match="split"):
        _parse(f"{_DOC}a{_DOC}", 1, "p")
    with pytest.raises(PromptError, match="exactly once"):
        _parse(f"{_DOC}a{_DOC}{_SPLIT}", 2, "p")


def test_score_math_and_masking() -> None:
    eng = _FakeAttentionEngine()
    rng = np.random.default_rng(0)
    q, na = rng.random(12) * 4, rng.random(12) * 4
    q[3] = 0.0  # a token the calibration query attends much more: an outlier
    na[3] = 40.0
    rows = AttentionRows(
        prefix_offsets=[(i, i + 1) for i in range(12)],
        rows=[list(q * 2), list(na * 3)],  # sums over 2 and 3 suffix tokens
        prefix_tokens=12,
        tokens_encoded=[2, 3],
        layers=[0],
    )
    spans = [(0, 2), (2, 8), (8, 12)]
    scores, raw, cal = ICRRanker(eng)._score(rows, spans)
    np.testing.assert_allclose(scores, [(q - na)[a:b].sum() for a, b in spans])
    np.testing.assert_allclose(raw, [q[a:b].sum() for a, b in spans])
    np.testing.assert_allclose(cal, [na[a:b].sum() for a, b in spans])
    masked, _, _ = ICRRanker(eng, mask_outliers=True)._score(rows, spans)
    c = (q - na)[2:8]
    keep = c > c.mean() - 2 * c.std(ddof=1)
    assert not keep[1]  # the outlier token is dropped
    assert masked[1] == pytest.approx(c[keep].sum()) and masked[1] > scores[1]
    assert masked[0] == pytest.approx(scores[0]) or masked[0] >= scores[0]
    plain, _, _ = ICRRanker(eng, calibrate=False)._score(rows, spans)
    np.testing.assert_allclose(plain, raw)


def test_sliding_windows_cover_back_to_front() -> None:
    assert ICRRanker._windows(5, 8) == [(0, 5)]
    w = ICRRanker._windows(20, 8)
    assert w[0] == (12, 20) and w[-1][0] == 0
    assert all(b - a == 8 for a, b in w) and all(w[i][0] - w[i + 1][0] == 4 for i in range(len(w) - 2))


# ----------------------------------------------------------------------------- SmolLM2


async def test_spans_match_rendered_prompt(smollm2_engine: Any, dl19: Any) -> None:
    corpus, queries, run = dl19
    qid = "264014"
    docs = [_doc(corpus, d) for d in run[qid][:4]]
    r = ICRRanker(smollm2_engine)
    texts = [r._doc_text(d) for d in docs]
    lay = r._layout(queries[qid], texts)
    # prefix + suffix is exactly the engine's rendered prompt of the unmarked template
    plain = r.template.render(passages=texts, query=queries[qid], split="")
    full = smollm2_engine.render([{"role": m["role"], "content": m["content"]} for m in plain])
    assert lay.prefix + lay.suffix == full
    assert lay.prefix.rstrip().endswith(texts[-1]) and "Query:" in lay.suffix
    rows = await smollm2_engine.attention_rows(lay.prefix, [lay.suffix], layers=[0])
    spans = r._spans(rows, lay, texts)  # raises if a decoded span differs from its text
    tok = smollm2_engine.hf_tokenizer
    for (t0, t1), text in zip(spans, texts, strict=True):
        assert tok.decode(rows.prefix_ids[t0:t1]).strip() == text
        assert t0 > 0 and t1 < rows.prefix_tokens
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))


async def test_icr_smollm2_permutation_and_trace(smollm2_engine: Any, dl19: Any) -> None:
    corpus, queries, run = dl19
    qid = "1037798"
    docs = [_doc(corpus, d, words=35) for d in run[qid][:5]]
    ranking = await ICRRanker(smollm2_engine).arank(queries[qid], docs)
    assert sorted(ranking.ids) == sorted(d.id for d in docs)
    assert len(ranking.trace) == 1
    step = ranking.trace[0]
    assert step.kind == "icr" and step.prompt is not None and step.prompt.startswith("icr@1#")
    assert step.input["shown_order"] == [d.id for d in reversed(docs)]  # best prior nearest the query
    assert step.input["layers"] == list(range(smollm2_engine.model.config.num_hidden_layers))
    n_q, n_na = step.input["suffix_tokens_encoded"]
    assert step.input["prefix_tokens"] > 5 * max(n_q, n_na)
    out = step.output
    for d in docs:
        assert out["scores"][d.id] == pytest.approx(
            out["query_mass"][d.id] - out["calibration_mass"][d.id], abs=1e-9
        )
    scores = [d.score for d in ranking.documents]
    assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert ranking.usage.llm_calls == 3 and ranking.usage.cached_tokens == 2 * step.input["prefix_tokens"]


async def test_icr_smollm2_windows_and_masking(smollm2_engine: Any, dl19: Any) -> None:
    corpus, queries, run = dl19
    qid = "1112341"
    docs = [_doc(corpus, d, words=20) for d in run[qid][:5]]
    r = ICRRanker(smollm2_engine, chunk_docs=3, mask_outliers=True, layers=[0, 5, 10, -1])
    ranking = await r.arank(queries[qid], docs, top_k=4)
    assert len(ranking.documents) == 4 and len(set(ranking.ids)) == 4
    assert [s.input["window"] for s in ranking.trace] == [[2, 5], [1, 4], [0, 3]]  # stride 1
    assert all(s.input["mask_outliers"] for s in ranking.trace)
    # the first window's top document moves on into the second window
    assert ranking.trace[0].output["order"][0] in ranking.trace[1].input["shown_order"]


# ----------------------------------------------------------------------------- Qwen2.5-Coder-0.5B

# Five short real DL19 passages on unrelated topics; each query targets one of them.
_PASSAGES = ["6191", "8612909", "1735360", "985991", "8434624"]
_CASES = [
    ("What is a declaratory judgment by a court?", "8612909"),
    ("Which bacteria cause Legionnaires' disease?", "1735360"),
    ("What is a SIGMET weather notice for pilots?", "985991"),
]


@pytest.mark.parametrize(("query", "relevant"), _CASES)
async def test_icr_qwen_finds_the_relevant_passage(
    qwen05_engine: Any, dl19: Any, query: str, relevant: str
) -> None:
    corpus, _, _ = dl19
    docs = [_doc(corpus, d, words=60) for d in _PASSAGES]
    ranking = await ICRRanker(qwen05_engine).arank(query, docs)
    assert sorted(ranking.ids) == sorted(_PASSAGES)
    scores = ranking.trace[0].output["scores"]
    assert relevant in ranking.ids[:3], scores
    # measured: first in every case, with a calibrated score ~5x the runner-up's
    assert ranking.ids[0] == relevant, scores


def test_icr_text_cleaning_drops_lone_surrogates() -> None:
    from hoprank.rankers.icr import _clean

    cleaned = _clean("bad \ud800 text")
    assert "\ud800" not in cleaned and "bad" in cleaned and "text" in cleaned
    cleaned.encode("utf-8")  # the HF tokenizer needs valid text
