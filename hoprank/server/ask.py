"""``/v1/ask``: decompose → retrieve (BM25 index) → rerank → answer with citations."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hoprank.errors import ConfigError
from hoprank.server.state import AskOutcome, ServiceState
from hoprank.tools.base import Retriever

__all__ = ["PipelineAsker", "build_asker"]

logger = logging.getLogger("hoprank.server")


class PipelineAsker:
    """Answers with :class:`hoprank.agents.DecomposeRetrieveRerank` and
    :class:`hoprank.agents.Answerer`; ``citations`` are the evidence passages the answer
    cites, ``evidence`` every passage the answerer saw."""

    def __init__(self, pipeline: Any, answerer: Any) -> None:
        self.pipeline = pipeline
        self.answerer = answerer

    async def __call__(self, question: str, *, top_k: int) -> AskOutcome:
        result = await self.pipeline.arun(question)
        evidence = list(result.ranked[:top_k])
        answer = await self.answerer.aanswer(question, evidence)
        cited = set(answer.citations)
        return AskOutcome(
            answer=answer.answer,
            citations=[d for d in evidence if d.id in cited],
            evidence=evidence,
            sub_questions=list(result.sub_questions),
            usage=result.usage + answer.usage,
        )


async def build_asker(state: ServiceState, retriever: Retriever | None = None) -> PipelineAsker:
    """The default asker over ``state.settings.index_dir`` (a saved BM25 index)."""
    from hoprank.agents import Answerer, Decomposer, DecomposeRetrieveRerank

    if state.engine is None:
        raise ConfigError("/v1/ask needs a model: start the server with --model as well as --index")
    if retriever is None:
        from hoprank.tools.bm25 import BM25Retriever

        folder = state.settings.index_dir
        if folder is None:
            raise ConfigError("no index configured for /v1/ask")
        retriever = await asyncio.to_thread(BM25Retriever.load, folder)
        logger.info("index loaded", extra={"index": str(folder)})
    ranker = await state.get_ranker(state.settings.resolved_default_ranker)
    pipeline = DecomposeRetrieveRerank(retriever, decomposer=Decomposer(state.engine), ranker=ranker)
    return PipelineAsker(pipeline, Answerer(state.engine, max_tokens=state.settings.answer_max_tokens))
