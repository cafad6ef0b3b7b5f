"""Identity, the cross-encoder plumbing (tiny random BERT), and the ranker factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hoprank.errors import ConfigError
from hoprank.llm.engines.scripted import ScriptedEngine
from hoprank.rankers import RANKERS, CrossEncoderRanker, Identity, make_ranker
from hoprank.types import Document


def docs(n: int) -> list[Document]:
    return [Document(id=f"d{i}", text=f"text number {i}", score=float(n - i)) for i in range(n)]


async def test_identity_keeps_order_and_top_k() -> None:
    ds = docs(5)
    r = await Identity().arank("q", ds)
    assert r.ids == [d.id for d in ds] and r.usage.llm_calls == 0 and r.trace == []
    assert Identity().rank("q", ds, top_k=2).ids == ["d0", "d1"]
    assert make_ranker("identity").rank("q", ds).ids == [d.id for d in ds]


def test_factory_errors() -> None:
    assert set(RANKERS) >= {"identity", "rankgpt", "first", "pointwise", "icr", "cross-encoder"}
    with pytest.raises(ConfigError, match="unknown ranker"):
        make_ranker("nope")
    with pytest.raises(ConfigError, match="engine"):
        make_ranker("rankgpt")
    with pytest.raises(ConfigError, match="bad parameters"):
        make_ranker("rankgpt", ScriptedEngine(["x"]), windw=3)
    with pytest.raises(ConfigError, match="model"):
        make_ranker("cross-encoder")


def test_registry_and_configs() -> None:
    """One registry of names (make_ranker, CLI, service); each ranker validates its
    parameters with its config and describes itself from it."""
    from hoprank.rankers import REGISTRY, FIRSTConfig, RankGPT, RankGPTConfig, ranker_spec

    assert tuple(REGISTRY) == RANKERS and ranker_spec("Cross_Encoder").name == "cross-encoder"
    assert ranker_spec("first").config_class is FIRSTConfig and ranker_spec("identity").config_class is None
    assert ranker_spec("icr").default_prompt == "icr"
    eng = ScriptedEngine(["[1] > [2]"])
    r = RankGPT(eng, window=6, labels="letters", max_new_tokens=30)
    assert isinstance(r.config, RankGPTConfig) and r.window_cfg.step == 3 and r.label_style == "letters"
    same = RankGPT(eng, config=RankGPTConfig(window=6, labels="letters", max_new_tokens=30))
    assert same.config == r.config and same.describe() == r.describe()
    d = r.describe()
    assert d["name"] == "rankgpt" and d["class"] == "RankGPT" and d["prompt"] == r.prompt.ref
    assert d["params"]["window"] == 6 and "prompt" not in d["params"] and d["engine"] == eng.describe()
    # values from text (a CLI's -p key=value) are validated, wrong ones are ConfigErrors
    assert RankGPT(eng, window="8", passes="2").window_cfg.passes == 2  # type: ignore[arg-type]
    for bad in ({"window": 1}, {"window": 4, "step": 4}, {"passes": 0}, {"max_passage_tokens": 0}):
        with pytest.raises(ConfigError):
            RankGPT(eng, **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="step must satisfy"):
        RankGPT(eng, window=4, step=9)
    assert Identity().describe() == {
        "name": "identity",
        "class": "Identity",
        "prompt": None,
        "params": {},
        "engine": None,
    }


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT with a 1-logit head and a word-level vocab
    (no real cross-encoder weights exist offline): tests the plumbing only."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-ce")
    words = sorted({w for d in docs(6) for w in d.text.split()} | {"q", "query", "what"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *[str(i) for i in range(10)]]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    BertForSequenceClassification(cfg).save_pretrained(str(folder))
    json.loads((folder / "config.json").read_text())
    return folder


async def test_cross_encoder_plumbing(tiny_cross_encoder: Path) -> None:
    ranker = make_ranker("cross-encoder", model=tiny_cross_encoder, max_length=64, device="cpu")
    assert isinstance(ranker, CrossEncoderRanker)
    ds = docs(6)
    r = await ranker.arank("what query", ds)
    assert sorted(r.ids) == sorted(d.id for d in ds)
    scores = [d.score for d in r.documents]
    assert all(isinstance(s, float) for s in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    # the scores are the model's, not the first-stage ones
    direct = ranker._predict([("what query", d.text) for d in ds])
    assert sorted(direct, reverse=True) == pytest.approx(scores)
    assert r.trace[0].kind == "cross-encoder"


def test_factory_builds_icr_lazily() -> None:
    """``icr`` comes from hoprank.rankers.icr, imported on demand; it needs ATTENTION."""
    from hoprank.errors import CapabilityMissing

    with pytest.raises(CapabilityMissing):
        make_ranker("icr", ScriptedEngine(["x"]))


async def test_arank_many_cancels_the_rest_after_a_failure() -> None:
    import asyncio

    from hoprank.rankers.base import BaseRanker, RankerOutput

    class Slow(BaseRanker):
        name = "slow"

        def __init__(self) -> None:
            self.cancelled: list[str] = []
            self.finished: list[str] = []

        async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
            if query == "bad":
                raise ConfigError("bad query")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.append(query)
                raise
            self.finished.append(query)
            return RankerOutput(docs)

    ranker = Slow()
    docs = [Document(id="a", text="x"), Document(id="b", text="y")]
    with pytest.raises(ConfigError, match="bad query"):
        await asyncio.wait_for(
            ranker.arank_many([("q1", docs), ("bad", docs), ("q2", docs)], concurrency=3), timeout=10
        )
    assert sorted(ranker.cancelled) == ["q1", "q2"] and ranker.finished == []
