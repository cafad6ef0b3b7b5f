"""Timing helpers shared by perf_rankers.py and profile_ranker.py: DL19 windows, a wall +
process-CPU clock, and the bare model calls every ranker is compared with."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from hoprank.types import Document

ROOT = Path(__file__).resolve().parent.parent
DL19 = Path(os.environ.get("HOPRANK_SHARED", ROOT.parent / "shared")) / "datasets" / "trec-dl-2019-passage"


def load_dl19(n: int, depth: int) -> list[tuple[str, str, list[Document]]]:
    """The first ``n`` DL19 queries with their BM25 top-``depth`` passages, in BM25 order."""
    queries = [json.loads(x) for x in (DL19 / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    run: dict[str, list[tuple[int, str]]] = {}
    for line in (DL19 / "run.bm25.tsv").read_text(encoding="utf-8").splitlines():
        qid, did, rank, _ = line.split("\t")
        run.setdefault(qid, []).append((int(rank), did))
    chosen = [q for q in queries if q["id"] in run][:n]
    wanted = {d for q in chosen for _, d in sorted(run[q["id"]])[:depth]}
    corpus = {}
    with open(DL19 / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["id"] in wanted:
                corpus[row["id"]] = row
    return [
        (
            q["id"],
            q["text"],
            [
                Document(id=d, text=corpus[d]["text"], title=corpus[d].get("title") or None)
                for _, d in sorted(run[q["id"]])[:depth]
            ],
        )
        for q in chosen
    ]


class Clock:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0


def _sync(engine: Any) -> None:
    if str(engine.device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def on_engine_thread(engine: Any, fn: Any, *args: Any) -> Any:
    """Run ``fn`` where ``engine`` runs its model work (its torch worker thread, one
    OpenMP team), so bare and SDK timings share threads; timing happens inside ``fn``."""
    from hoprank.llm.engines.transformers_engine import TransformersEngine

    if not isinstance(engine, TransformersEngine):  # an engine without a worker thread
        return fn(*args)
    return engine.worker.call(fn, *args)


def bare_forward(engine: Any, ids: list[int]) -> Clock:
    """One plain ``model(...)`` call on ``ids``: last-position logits, nothing else."""

    def run() -> Clock:
        import torch

        x = torch.tensor([ids], device=engine.device)
        with torch.inference_mode(), Clock() as c:
            engine.model(input_ids=x, use_cache=False, logits_to_keep=1).logits[0, -1].float().cpu()
            _sync(engine)
        return c

    clock: Clock = on_engine_thread(engine, run)
    return clock


def forced_generate(engine: Any, ids: list[int], n: int) -> Clock:
    """Greedy generation of exactly ``n`` tokens (EOS suppressed by ``min_new_tokens``):
    RankGPT's cost when the model writes the whole permutation up to its cap."""
    clock: Clock = on_engine_thread(engine, _forced_generate, engine, ids, n)
    return clock


def _forced_generate(engine: Any, ids: list[int], n: int) -> Clock:
    import torch
    from transformers import GenerationConfig

    x = torch.tensor([ids], device=engine.device)
    cfg = GenerationConfig(
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        top_p=None,
        top_k=None,
        temperature=None,
        eos_token_id=engine._end_ids,
        pad_token_id=engine._pad_id,
    )
    with torch.inference_mode(), Clock() as c:
        out = engine.model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=cfg)
        _sync(engine)
    assert out.shape[1] - len(ids) == n, "forced generation stopped early"
    return c


def vars_of(c: Clock) -> dict[str, float]:
    return {"wall": round(c.wall, 4), "cpu": round(c.cpu, 4)}
