"""A cheap but real eval run for the crash tests: RankGPT (window 10, step 5) on TREC DL19
BM25 top-20, over a scripted engine that answers each window in reversed order after a
short sleep, through the evals runner and its on-disk LLM-call cache.

Run as a script it does one (resumable) run: ``python _crashkit.py DATASETS OUT CACHE``.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hoprank.evals import ExperimentConfig, RunResult, run_experiment
from hoprank.llm.base import Completion, Message
from hoprank.llm.engines.scripted import ScriptedEngine


class SlowReverse(ScriptedEngine):
    """Reverses every window after ``delay`` seconds (deterministic)."""

    def __init__(self, delay: float = 0.02) -> None:
        super().__init__(self._answer)
        self.delay = delay

    @staticmethod
    def _answer(messages: Sequence[Message]) -> str:
        labels = re.findall(r"(?m)^\[(\d+)\] ", messages[-1]["content"])
        return " > ".join(f"[{x}]" for x in reversed(labels))

    async def generate(self, messages: Sequence[Message], **kw: Any) -> Completion:
        await asyncio.sleep(self.delay)
        return await super().generate(messages, **kw)


def config(datasets: Path) -> ExperimentConfig:
    return ExperimentConfig(
        dataset=str(datasets / "trec-dl-2019-passage"),
        ranker="rankgpt",
        ranker_params={"window": 10, "step": 5},
        depth=20,
        concurrency=2,
    )


def run(datasets: Path, out: Path, cache: Path | bool, delay: float = 0.02) -> RunResult:
    return run_experiment(
        config(datasets), out, engine=SlowReverse(delay), cache=cache, progress=False, plots=False
    )


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
