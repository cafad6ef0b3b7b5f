"""LangChain and LlamaIndex adapters, with real langchain-core / llama-index-core objects,
a scripted-control ranker and the real FIRST ranker on SmolLM2 over DL19 passages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import BaseDocumentCompressor
from langchain_core.documents import Document as LCDocument
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from hoprank.adapters import HoprankDocumentCompressor, HoprankNodePostprocessor
from hoprank.errors import InvalidInput
from hoprank.rankers import make_ranker
from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.types import Document


class OverlapRanker(BaseRanker):
    """Scores by query-word overlap; records what it saw."""

    name = "overlap"

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str]]] = []

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        self.seen.append((query, [d.full_text for d in docs]))
        words = set(query.lower().split())
        scored = [d.with_score(float(len(words & set(d.text.lower().split())))) for d in docs]
        scored.sort(key=lambda d: -(d.score or 0.0))
        return RankerOutput(scored)


TEXTS = ["the stock market fell", "cats and dogs play", "dogs bark", "a cat sleeps"]


@pytest.fixture(scope="module")
def dl19(datasets_dir: Path) -> tuple[str, list[tuple[str, str]]]:
    d = datasets_dir / "trec-dl-2019-passage"
    qid, query = next(
        (r["id"], r["text"]) for r in map(json.loads, (d / "queries.jsonl").open(encoding="utf-8"))
    )
    ids = [line.split("\t")[1] for line in (d / "run.bm25.tsv").open() if line.startswith(qid + "\t")][:6]
    texts = {}
    for line in (d / "corpus.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        if r["id"] in ids:
            texts[r["id"]] = r["text"]
    return query, [(i, texts[i]) for i in ids]


@pytest.fixture(scope="module")
def first_smollm2() -> Any:
    from hoprank.llm import load_engine

    return make_ranker("first", engine=load_engine("smollm2-135m", threads=2), max_passage_tokens=60)


def _lc_docs() -> list[LCDocument]:
    return [
        LCDocument(page_content=t, metadata={"source": f"s{i}", "title": f"T{i}"}, id=f"lc{i}")
        for i, t in enumerate(TEXTS)
    ]


async def test_langchain_compressor_sync_and_async() -> None:
    ranker = OverlapRanker()
    comp = HoprankDocumentCompressor(ranker=ranker, top_n=2)
    assert isinstance(comp, BaseDocumentCompressor)
    docs = _lc_docs()
    out = await comp.acompress_documents(docs, "dogs bark loudly")
    assert [d.id for d in out] == ["lc2", "lc1"]
    assert out[0].metadata == {
        "source": "s2",
        "title": "T2",
        "relevance_score": 1.0,  # the overlap counts are no probability: 1/rank
        "rerank_rank": 1,
        "rerank_score_kind": "rank",
    }
    assert docs[2].metadata == {"source": "s2", "title": "T2"}  # inputs untouched
    assert ranker.seen[0][1][0] == "T0: the stock market fell"  # title passed to the ranker
    # the sync facade works inside a running event loop (this test is async)
    sync = comp.compress_documents(docs, "dogs bark loudly")
    assert [d.page_content for d in sync] == [d.page_content for d in out]
    assert comp.compress_documents([], "q") == []
    all_docs = HoprankDocumentCompressor(ranker=make_ranker("identity"), top_n=None).compress_documents(
        docs, "q"
    )
    assert [d.metadata["relevance_score"] for d in all_docs] == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
    with pytest.raises(TypeError):
        HoprankDocumentCompressor(ranker=object()).compress_documents(docs, "q")


async def test_llamaindex_postprocessor_sync_and_async() -> None:
    nodes = [
        NodeWithScore(node=TextNode(text=t, metadata={"k": i}), score=0.1 * i) for i, t in enumerate(TEXTS)
    ]
    pp = HoprankNodePostprocessor(ranker=OverlapRanker(), top_n=3)
    assert isinstance(pp, BaseNodePostprocessor)
    out = pp.postprocess_nodes(nodes, query_str="dogs bark loudly")
    assert [n.node.get_content() for n in out] == ["dogs bark", "cats and dogs play", "the stock market fell"]
    assert [n.score for n in out] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert out[0].node is nodes[2].node and out[0].node.metadata == {"k": 2}
    aout = await pp.apostprocess_nodes(nodes, query_bundle=QueryBundle("dogs bark loudly"))
    assert [n.node.node_id for n in aout] == [n.node.node_id for n in out]
    assert pp.postprocess_nodes([], query_str="q") == []
    with pytest.raises(InvalidInput):
        pp.postprocess_nodes(nodes)


async def test_adapters_with_real_first_on_smollm2(
    dl19: tuple[str, list[tuple[str, str]]], first_smollm2: Any
) -> None:
    query, passages = dl19
    lc = [LCDocument(page_content=t, metadata={"docid": i}) for i, t in passages]
    out = await HoprankDocumentCompressor(ranker=first_smollm2, top_n=4).acompress_documents(lc, query)
    assert len(out) == 4 and len({d.metadata["docid"] for d in out}) == 4
    assert {d.metadata["docid"] for d in out} <= {i for i, _ in passages}
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True)

    nodes = [NodeWithScore(node=TextNode(text=t, id_=i), score=None) for i, t in passages]
    ranked = HoprankNodePostprocessor(ranker=first_smollm2, top_n=None).postprocess_nodes(
        nodes, query_str=query
    )
    assert sorted(n.node.node_id for n in ranked) == sorted(i for i, _ in passages)
    node_scores = [n.score for n in ranked]
    assert all(s is not None for s in node_scores) and node_scores == sorted(node_scores, reverse=True)
    # same model, same passages, same order from both adapters (deterministic logits)
    assert [d.metadata["docid"] for d in out] == [n.node.node_id for n in ranked][:4]
    # one window of FIRST: label probabilities, in [0, 1], a client can threshold
    assert out[0].metadata["rerank_score_kind"] == "probability"
    assert all(0.0 <= s <= 1.0 for s in node_scores) and 0.99 <= sum(node_scores) <= 1.01
    # the README's positional form, with a threshold between the 2nd and 3rd scores
    cut = (node_scores[1] + node_scores[2]) / 2
    kept = await HoprankDocumentCompressor(
        first_smollm2, top_n=None, score_threshold=cut
    ).acompress_documents(lc, query)
    assert [d.metadata["docid"] for d in kept] == [n.node.node_id for n in ranked][:2]
    kept_nodes = HoprankNodePostprocessor(first_smollm2, top_n=5, score_threshold=cut).postprocess_nodes(
        nodes, query_str=query
    )
    assert [n.node.node_id for n in kept_nodes] == [n.node.node_id for n in ranked][:2]


def test_positional_ranker_and_threshold_with_a_rank_based_ranker() -> None:
    comp = HoprankDocumentCompressor(make_ranker("identity"), top_n=3)
    assert comp.top_n == 3
    out = HoprankDocumentCompressor(
        make_ranker("identity"), top_n=None, score_threshold=0.3
    ).compress_documents(_lc_docs(), "q")
    assert [d.metadata["relevance_score"] for d in out] == [1.0, 0.5, pytest.approx(1 / 3)]
    pp = HoprankNodePostprocessor(make_ranker("identity"), top_n=5)
    assert pp.top_n == 5
    nodes = [NodeWithScore(node=TextNode(text=t), score=None) for t in TEXTS]
    assert len(pp.postprocess_nodes(nodes, query_str="q")) == 4
    with pytest.raises(TypeError):
        HoprankNodePostprocessor(make_ranker("identity"), make_ranker("identity"))  # type: ignore[misc]
