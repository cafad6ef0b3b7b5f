"""Agent layer on real models over the real HotpotQA corpus (BM25, 4,858 paragraphs).

SmolLM2-135M checks plumbing only (structure, traces, ids), never answer quality;
Qwen2.5-Coder-0.5B checks that a real bridge question is decomposed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hoprank.agents import (
    AgentResult,
    Answerer,
    Budget,
    Decomposer,
    DecomposeRetrieveRerank,
    Decomposition,
    MultiHopAgent,
    PipelineResult,
    Rewriter,
)
from hoprank.agents.hops import restates
from hoprank.prompts import load_prompt

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hotpot(datasets_dir: Path) -> tuple[Any, list[dict[str, Any]]]:
    from hoprank.tools.bm25 import BM25Retriever

    folder = datasets_dir / "hotpotqa-dev-distractor-500"
    bm25 = BM25Retriever.from_jsonl(folder / "corpus.jsonl")
    with (folder / "queries.jsonl").open(encoding="utf-8") as f:
        queries = [json.loads(line) for _, line in zip(range(3), f, strict=False)]
    return bm25, queries


@pytest.fixture(scope="module")
def smol() -> Any:
    from hoprank.llm import TransformersEngine

    return TransformersEngine("smollm2-135m", threads=1)


def _check_llm_steps(steps: list[Any], prompt_name: str) -> None:
    ref = load_prompt(prompt_name).ref
    assert steps
    for s in steps:
        assert s.prompt == ref and s.raw is not None
        assert s.usage.prompt_tokens > 0 and s.usage.completion_tokens > 0 and s.usage.llm_calls == 1
        assert s.seconds > 0


async def test_smollm2_decomposer_pipeline_and_answer(
    smol: Any, hotpot: tuple[Any, list[dict[str, Any]]]
) -> None:
    bm25, queries = hotpot
    question = queries[0]["text"]
    dec = await Decomposer(smol, max_tokens=80).adecompose(question)
    assert dec.sub_questions and all(isinstance(s, str) and s.strip() for s in dec.sub_questions)
    assert dec.queries[0] == question
    _check_llm_steps(dec.trace, "decompose")
    assert dec.fallback == dec.trace[-1].fallback
    assert Decomposition.model_validate_json(dec.model_dump_json()) == dec

    pipe = DecomposeRetrieveRerank(bm25, decomposer=Decomposer(smol, max_tokens=80), k=10, top_k=5)
    res = await pipe.arun(question)
    corpus_ids = {d.id for d in bm25.documents}
    assert len(res.evidence) == 5 and {d.id for d in res.ranked} <= corpus_ids
    assert len({d.id for d in res.ranked}) == len(res.ranked)
    retrieves = [s for s in res.trace if s.kind == "retrieve"]
    assert [s.input["query"] for s in retrieves] == res.queries and res.queries[0] == question
    retrieved = {i for s in retrieves for i in s.output["ids"]}
    assert {d.id for d in res.ranked} == retrieved
    assert PipelineResult.model_validate_json(res.model_dump_json()) == res

    ans = await Answerer(smol, mode="short", max_tokens=16).aanswer(question, res.evidence)
    assert set(ans.citations) <= set(res.ids)
    _check_llm_steps(ans.trace, "answer-short")


async def test_smollm2_rewriter_strategies(smol: Any, hotpot: tuple[Any, list[dict[str, Any]]]) -> None:
    bm25, queries = hotpot
    question = queries[2]["text"]
    for strategy, prompt in (
        ("multi_query", "rewrite-multi-query"),
        ("keywords", "rewrite-keywords"),
        ("hyde", "rewrite-hyde"),
    ):
        rw = await Rewriter(smol, strategy, max_tokens=40).arewrite(question)  # type: ignore[arg-type]
        assert rw.queries[0] == question and all(q.strip() for q in rw.queries)
        assert rw.fallback or len(rw.queries) >= 2
        _check_llm_steps(rw.trace, prompt)
        for q in rw.queries:  # ready for a retriever
            assert len(await bm25.search(q, 3)) == 3


async def test_smollm2_multihop_agent_structure(smol: Any, hotpot: tuple[Any, list[dict[str, Any]]]) -> None:
    bm25, queries = hotpot
    agent = MultiHopAgent(smol, bm25, budget=Budget(max_steps=2), k=3, max_tokens=60)
    res = await agent.arun(queries[1]["text"])
    assert res.state in ("answered", "budget_exhausted", "failed")
    assert 1 <= res.steps <= 2
    retrieved = {i for s in res.trace if s.kind == "retrieve" for i in s.output.get("ids", [])}
    assert set(res.citations) <= retrieved
    assert {d.id for d in res.evidence} == retrieved and retrieved
    _check_llm_steps([s for s in res.trace if s.kind == "agent"], "agent-step")
    assert res.usage.llm_calls == res.steps
    if res.state == "answered":
        assert res.answer
    else:
        assert res.answer is None and res.reason and res.trace[-1].kind == "stop"
    assert AgentResult.model_validate_json(res.model_dump_json()) == res


async def test_qwen05_decomposes_a_real_bridge_question(hotpot: tuple[Any, list[dict[str, Any]]]) -> None:
    from hoprank.llm import TransformersEngine

    engine = TransformersEngine("qwen2.5-coder-0.5b", threads=1)
    # HotpotQA's first dev question: a bridge through "the woman who portrayed Corliss Archer".
    question = hotpot[1][0]["text"]
    dec = await Decomposer(engine, max_tokens=120).adecompose(question)
    assert not dec.fallback
    # the copy of the question it may add is dropped (hops.restates); the rest is new
    assert dec.sub_questions and dec.n_new == len(dec.sub_questions), dec.sub_questions
    assert not any(restates(s, question) for s in dec.sub_questions)
    assert all(len(s.split()) >= 3 for s in dec.sub_questions)


def test_cli_decompose_and_ask_on_smollm2(
    smol: Any, datasets_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import hoprank.cli.agents as cli_agents
    from hoprank.cli import app

    monkeypatch.setattr(cli_agents, "_engine", lambda *a, **k: smol)  # reuse the loaded model
    folder = datasets_dir / "hotpotqa-dev-distractor-500"
    question = json.loads((folder / "queries.jsonl").open(encoding="utf-8").readline())
    corpus = tmp_path / "corpus.jsonl"
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        corpus.write_text("".join(line for _, line in zip(range(60), f, strict=False)), encoding="utf-8")
    runner = CliRunner()

    r = runner.invoke(app, ["decompose", question["text"], "--json", "--max-tokens", "60"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["question"] == question["text"] and out["sub_questions"]

    r = runner.invoke(
        app,
        [
            "ask",
            question["text"],
            "--corpus",
            str(corpus),
            "--mode",
            "agent",
            "--max-steps",
            "1",
            "--max-tokens",
            "40",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    corpus_ids = {json.loads(line)["id"] for line in corpus.read_text(encoding="utf-8").splitlines()}
    assert out["agent"]["state"] in ("answered", "budget_exhausted", "failed")
    assert {e["id"] for e in out["evidence"]} <= corpus_ids
    assert set(out["citations"]) <= {e["id"] for e in out["evidence"]} | set(out["agent"]["citations"])

    r = runner.invoke(app, ["ask", "q?", "--corpus", str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 2 and "not found" in r.output
    r = runner.invoke(app, ["ask", "q?", "--corpus", str(corpus), "--mode", "nonsense"])
    assert r.exit_code == 2
