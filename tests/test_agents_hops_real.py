"""The chain bridge end to end on a real model (SmolLM2-135M) over the real HotpotQA
corpus (BM25, 4,858 paragraphs). Plumbing only: structure, substitution, traces; never
answer quality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hoprank.agents import Answerer, Decomposer, DecomposeRetrieveRerank, PipelineResult
from hoprank.agents.hops import references, restates
from hoprank.prompts import load_prompt

pytest.importorskip("torch")
pytest.importorskip("transformers")


async def test_smollm2_chain_bridge_end_to_end(smollm2_engine: Any, datasets_dir: Path) -> None:
    from hoprank.tools.bm25 import BM25Retriever

    folder = datasets_dir / "hotpotqa-dev-distractor-500"
    bm25 = BM25Retriever.from_jsonl(folder / "corpus.jsonl")
    question = json.loads((folder / "queries.jsonl").open(encoding="utf-8").readline())["text"]
    pipe = DecomposeRetrieveRerank(
        bm25,
        decomposer=Decomposer(smollm2_engine, prompt="decompose-chain", max_tokens=80),
        bridge_answerer=Answerer(smollm2_engine, mode="short", max_tokens=16),
        bridge="chain",
        k=10,
        top_k=5,
    )
    res = await pipe.arun(question)

    assert res.sub_questions and not any(restates(s, question) for s in res.sub_questions)
    decompose = [s for s in res.trace if s.kind == "decompose"]
    assert decompose and all(s.prompt == load_prompt("decompose-chain").ref for s in decompose)
    assert res.hops and [h.index for h in res.hops] == list(range(1, len(res.hops) + 1))
    answers = {h.index: h.answer for h in res.hops if h.answer is not None}
    for hop in res.hops:
        assert hop.refs == references(hop.sub_question, hop.index)
        for k in hop.refs:  # every answered reference is substituted into the search
            if k in answers:
                assert answers[k] in hop.query and f"#{k}" not in hop.query
        assert hop.ids and hop.query in res.queries
    hop_steps = [s for s in res.trace if s.name == "bridge.hop"]
    assert [s.input["query"] for s in hop_steps] == [h.query for h in res.hops]
    answer_steps = [s for s in res.trace if s.kind == "answer"]
    assert len(answer_steps) == sum(h.answered for h in res.hops)
    assert all(s.prompt == load_prompt("answer-short").ref and s.usage.llm_calls == 1 for s in answer_steps)

    retrieves = [s for s in res.trace if s.kind == "retrieve"]
    assert [s.input["query"] for s in retrieves] == res.queries and res.queries[0] == question
    assert not any(h.sub_question in res.queries for h in res.hops if h.refs)  # never searched raw
    corpus_ids = {d.id for d in bm25.documents}
    assert len(res.evidence) == 5 and {d.id for d in res.ranked} <= corpus_ids
    assert res.counters["hops"] == len(res.hops)
    assert res.usage.llm_calls == len(decompose) + len(answer_steps)
    assert PipelineResult.model_validate_json(res.model_dump_json()) == res
