"""benchmarks/hops.py in process with a scripted engine over the real HotpotQA corpus:
records, the before/after restatement counts and the tables."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hoprank.llm.base import Message
from hoprank.llm.engines.scripted import ScriptedEngine

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HOPRANK_SHARED", ROOT.parent / "shared"))


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("hops_benchmark", ROOT / "benchmarks" / "hops.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _reply(messages: Sequence[Message]) -> str:
    """decompose@1: the question itself, then (re-asked) two sub-questions;
    decompose-chain@1: a chain with #1; answers: a name citing nothing."""
    text = messages[-1]["content"]
    if "Passages:" in text:
        return "Lucien Laviscount"
    question = next(
        m["content"][len("Question: ") :] for m in reversed(messages) if m["content"].startswith("Question: ")
    )
    if "chain of simple" in messages[0]["content"]:
        return json.dumps(
            {
                "sub_questions": [
                    "Who is the youngest daughter of Lady Mary-Gaye Curzon?",
                    "Which 2017 film stars #1?",
                ]
            }
        )[len('{"sub_questions": ["') :]
    if "only repeat the question" in text:
        return json.dumps(
            {"find_first": "", "sub_questions": ["Who is Lady Mary-Gaye Curzon?", "Which 2017 film?"]}
        )[len('{"find_first": "') :]
    return json.dumps({"find_first": "", "sub_questions": [question]})[len('{"find_first": "') :]


def test_hops_benchmark_counts_restatements_and_recall(tmp_path: Path) -> None:
    mod = _module()
    args = argparse.Namespace(
        data=str(SHARED / "datasets"), start=100, limit=1, systems="bm25,one_hop,chain,chain_d1"
    )
    engine = ScriptedEngine(_reply)
    with mod.Sink(str(tmp_path / "r"), resume=False) as sink:
        records = asyncio.run(mod.run(args, engine, sink))
    (rec,) = records
    assert rec["question"].startswith("The youngest daughter of Lady Mary-Gaye Curzon")
    d1, dc = rec["decompositions"]["decompose"], rec["decompositions"]["decompose-chain"]
    assert d1["old_returned_original"] and d1["first_reply_restated"] == 1 and d1["left_restated"] == 0
    assert d1["counters"]["reask_restated"] == 1 and d1["fallback_to"] is None
    assert not dc["old_returned_original"] and dc["sub_questions"][1] == "Which 2017 film stars #1?"
    chain = rec["systems"]["chain"]
    assert chain["hops"][1]["query"] == "Which 2017 film stars Lucien Laviscount?"
    assert set(rec["systems"]) == {"bm25", "one_hop", "chain", "chain_d1"}
    saved = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert saved == records
    table = mod.table(records)
    assert "| decompose | 1/1 | 1/1 | 1 | 1/1 | 0 / 0 | 0 |" in table
    assert "| chain | 1 |" in table and "| bm25 | 1 |" in table
