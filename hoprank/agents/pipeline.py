"""Decompose → (rewrite) → retrieve per query concurrently → (bridge) → fuse (RRF) → rerank.

Every stage is optional and swappable: without a decomposer the question is the only
query; without a ranker the fused order stands. The ranker always judges the pool
against the ORIGINAL question.

The optional bridge stage serves two-hop "bridge" questions, whose second paragraph
is about an entity the question never names ("the woman who portrayed Corliss
Archer"): the first sub-question is answered in a few words from its own top
passages, and the original question and the later sub-questions are searched again
with that answer appended. With ``bridge="chain"`` the stage bridges hop by hop instead
(:mod:`hoprank.agents.bridge`): chained sub-questions ("Which university did #1
attend?") get the earlier hops' answers substituted, each hop is searched and, when a
later hop needs it, answered; ``PipelineResult.hops`` holds every hop's query and answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from hoprank._sync import run_sync
from hoprank.agents._common import check_documents, gather_bounded, norm_query, unique
from hoprank.agents.answer import Answerer
from hoprank.agents.bridge import Hop, run_chain, usable_answer
from hoprank.agents.decompose import Decomposer
from hoprank.agents.hops import references
from hoprank.agents.rewrite import Rewriter
from hoprank.errors import InvalidInput
from hoprank.llm.base import LLM
from hoprank.rankers.base import Ranker
from hoprank.rankers.config import ComponentConfig
from hoprank.runs import rrf_fuse
from hoprank.tools.base import Retriever
from hoprank.types import Document, Step, Usage

__all__ = ["DecomposeRetrieveRerank", "PipelineConfig", "PipelineResult"]


class PipelineResult(BaseModel):
    """Evidence for one question. ``ranked`` is the whole ordering (reranked pool, then
    the rest of the fused list); ``evidence`` its top ``top_k``. ``hops`` are the chain
    bridge's hops (query and answer of each; empty otherwise); ``counters`` sums up the
    decomposer's re-asks and fallbacks (:attr:`Decomposition.counters`) and, with the
    chain bridge, its hops (:attr:`hoprank.agents.bridge.Chain.counters`)."""

    question: str
    sub_questions: list[str] = Field(default_factory=list)
    queries: list[str] = Field(default_factory=list)
    bridge: str | None = None
    hops: list[Hop] = Field(default_factory=list)
    evidence: list[Document] = Field(default_factory=list)
    ranked: list[Document] = Field(default_factory=list)
    fallback: bool = False
    counters: dict[str, int] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    trace: list[Step] = Field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [d.id for d in self.evidence]


@dataclass
class _Queries:
    """The query-planning stage's result: what to retrieve for, and how it was found."""

    queries: list[str]
    sub_questions: list[str] = field(default_factory=list)
    fallback: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    trace: list[Step] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


@dataclass
class _Bridge:
    """The bridge stage's result: the short answer to the first sub-question (None when
    unusable), the sub-question itself when it had to be retrieved (with its list), the
    new queries the answer makes, and the stage's trace and usage."""

    answer: str | None = None
    queries: list[str] = field(default_factory=list)
    lists: list[list[Document]] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    main: list[str] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    trace: list[Step] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


class PipelineConfig(ComponentConfig):
    """The numeric parameters of :class:`DecomposeRetrieveRerank` (see its docstring)."""

    k: int = 20
    pool_depth: int = 20
    top_k: int = 5
    rrf_k: int = 60
    original_weight: float = 1.0
    include_original: bool = True
    bridge_k: int = 3
    bridge: Literal["one_hop", "chain"] = "one_hop"
    concurrency: int = 4


class DecomposeRetrieveRerank:
    """The retrieve-and-rerank pipeline for multi-hop questions.

    ``k``: documents retrieved per query; ``pool_depth``: how many fused documents the
    ranker sees; ``top_k``: evidence returned; ``concurrency``: searches in flight at
    once per question (rewrites follow the rewriter's own ``concurrency``).
    ``include_original`` keeps the original question among the queries next to its
    sub-questions. ``rrf_k`` and ``original_weight`` (the RRF weight
    of the lists of the original question and its bridge form; 1 for the others) set
    the fusion. ``bridge_answerer`` (an :class:`Answerer`, usually ``mode="short"``)
    enables the bridge stage, answering the first sub-question from its top
    ``bridge_k`` passages; ``bridge="chain"`` bridges every hop instead (see the module
    docstring). The numeric parameters come as keywords or as one
    :class:`PipelineConfig` (``config=``).
    """

    def __init__(
        self,
        retriever: Retriever,
        *,
        config: PipelineConfig | None = None,
        decomposer: Decomposer | None = None,
        rewriter: Rewriter | None = None,
        ranker: Ranker | None = None,
        bridge_answerer: Answerer | None = None,
        **params: Any,
    ) -> None:
        cfg = PipelineConfig.build(config, params)
        if min(cfg.k, cfg.pool_depth, cfg.top_k, cfg.concurrency, cfg.bridge_k) < 1:
            raise InvalidInput("k, pool_depth, top_k, bridge_k and concurrency must be >= 1")
        if cfg.original_weight < 0:
            raise InvalidInput("original_weight must be >= 0")
        self.config = cfg
        self.retriever = retriever
        self.decomposer = decomposer
        self.rewriter = rewriter
        self.ranker = ranker
        self.k = cfg.k
        self.pool_depth = cfg.pool_depth
        self.top_k = cfg.top_k
        self.rrf_k = cfg.rrf_k
        self.original_weight = cfg.original_weight
        self.include_original = cfg.include_original
        self.bridge_answerer = bridge_answerer
        self.bridge_k = cfg.bridge_k
        self.chain = cfg.bridge == "chain" and bridge_answerer is not None
        self.concurrency = cfg.concurrency

    async def _retrieve(self, query: str) -> tuple[list[Document], Step]:
        step = Step(kind="retrieve", name=self.retriever.name)
        step.input = {"query": query, "k": self.k}
        t0 = time.perf_counter()
        docs = list(await self.retriever.search(query, self.k))
        step.seconds = time.perf_counter() - t0
        check_documents(docs, self.retriever)
        step.output = {"ids": [d.id for d in docs]}
        return docs, step

    async def arun(self, question: str) -> PipelineResult:
        """Retrieve and rank evidence for one question."""
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput("question must be a non-empty string")
        question = question.strip()
        t0 = time.perf_counter()
        plan = await self._plan_queries(question)
        trace, usage, queries = [*plan.trace], plan.usage, plan.queries
        lists, steps = await self._retrieve_all(queries)
        trace.extend(steps)
        main_keys = {norm_query(question)}
        bridge = None
        counters, hops = dict(plan.counters), []
        if self.bridge_answerer is not None:
            stage = self._chain if self.chain else self._bridge
            br = await stage(self.bridge_answerer, question, plan.sub_questions, queries, lists)
            trace.extend(br.trace)
            usage = usage + br.usage
            bridge, hops = br.answer, br.hops
            counters.update(br.counters)
            main_keys.update(norm_query(q) for q in br.main)
            extra_lists, extra_steps = await self._retrieve_all(br.extra)
            trace.extend(extra_steps)
            queries = [*queries, *br.queries, *br.extra]
            lists = [*lists, *br.lists, *extra_lists]
        weights = [self.original_weight if norm_query(q) in main_keys else 1.0 for q in queries]
        fused, fuse_step = self._fuse(lists, weights)
        trace.append(fuse_step)
        ranked, rerank_trace, rerank_usage = await self._rerank(question, fused)
        trace.extend(rerank_trace)
        usage = (usage + rerank_usage).model_copy(update={"seconds": time.perf_counter() - t0})
        return PipelineResult(
            question=question,
            sub_questions=plan.sub_questions,
            queries=queries,
            bridge=bridge,
            hops=hops,
            evidence=ranked[: self.top_k],
            ranked=ranked,
            fallback=plan.fallback,
            counters=counters,
            usage=usage,
            trace=trace,
        )

    async def _plan_queries(self, question: str) -> _Queries:
        """Decompose (sub-questions, with or without the question) and rewrite."""
        out = _Queries(queries=[question])
        if self.decomposer is not None:
            dec = await self.decomposer.adecompose(question)
            out.trace.extend(dec.trace)
            out.usage = out.usage + dec.usage
            out.sub_questions, out.fallback, out.counters = dec.sub_questions, dec.fallback, dec.counters
            # the chain searches a sub-question with references once they are filled in
            subs = [s for i, s in enumerate(dec.sub_questions, 1) if not (self.chain and references(s, i))]
            out.queries = unique([question, *subs]) if self.include_original else unique(subs) or [question]
        if self.rewriter is not None:
            rewrites = await gather_bounded(
                (self.rewriter.arewrite(q) for q in out.queries), self.rewriter.concurrency
            )
            for rw in rewrites:
                out.trace.extend(rw.trace)
                out.usage = out.usage + rw.usage
            out.queries = unique(q for rw in rewrites for q in rw.queries)
        return out

    async def _retrieve_all(self, queries: Sequence[str]) -> tuple[list[list[Document]], list[Step]]:
        """Each query's documents and retrieve step, at most ``concurrency`` searches at once."""
        results = await gather_bounded((self._retrieve(q) for q in queries), self.concurrency)
        return [docs for docs, _ in results], [step for _, step in results]

    def _fuse(self, lists: list[list[Document]], weights: list[float]) -> tuple[list[Document], Step]:
        step = Step(
            kind="fuse", name="rrf", input={"lists": len(lists), "rrf_k": self.rrf_k, "weights": weights}
        )
        t0 = time.perf_counter()
        fused = rrf_fuse(lists, k=self.rrf_k, weights=weights) if lists else []
        step.seconds = time.perf_counter() - t0
        step.output = {"ids": [d.id for d in fused], "before_dedupe": sum(len(x) for x in lists)}
        return fused, step

    async def _rerank(self, question: str, fused: list[Document]) -> tuple[list[Document], list[Step], Usage]:
        """The fused list with its head (``pool_depth``) reranked, the ranker's trace and usage."""
        if self.ranker is None or len(fused) <= 1:
            return fused, [], Usage()
        pool = fused[: self.pool_depth]
        started = time.time()
        ranking = await self.ranker.arank(question, pool)
        step = Step(
            started_at=started,
            kind="rerank",
            name=self.ranker.name,
            input={"query": question, "ids": [d.id for d in pool]},
            output={"ids": ranking.ids, "fallbacks": ranking.fallbacks},
            usage=ranking.usage,
            seconds=ranking.usage.seconds,
            fallback=ranking.fallbacks > 0,
        )
        ranked = list(ranking.documents) + fused[self.pool_depth :]
        return ranked, [*ranking.trace, step], ranking.usage.model_copy(update={"seconds": 0.0})

    async def _bridge(
        self,
        answerer: Answerer,
        question: str,
        sub_questions: list[str],
        queries: list[str],
        lists: list[list[Document]],
    ) -> _Bridge:
        """Answer the first sub-question from its passages (retrieved here when it is not
        among ``queries``); the answer, the new queries it makes, trace and usage."""
        subs = [s for s in unique(sub_questions) if norm_query(s) != norm_query(question)]
        if not subs:
            return _Bridge()
        out = _Bridge()
        first = subs[0]
        keys = [norm_query(q) for q in queries]
        if norm_query(first) in keys:
            docs = lists[keys.index(norm_query(first))]
        else:  # its passages join the fusion like every other query's
            docs, retrieve_step = await self._retrieve(first)
            out.trace.append(retrieve_step)
            out.queries, out.lists = [first], [docs]
        step = Step(
            kind="bridge",
            name="bridge",
            input={"sub_question": first, "ids": [d.id for d in docs[: self.bridge_k]]},
        )
        t0 = time.perf_counter()
        ans = await answerer.aanswer(first, docs[: self.bridge_k])
        step.seconds = time.perf_counter() - t0
        out.trace.extend(ans.trace)
        out.usage = ans.usage
        answer = usable_answer(ans)
        if answer is None:
            step.fallback = True
            step.error = "no usable short answer to the first sub-question"
            step.output = {"answer": ans.answer.strip()}
            out.trace.append(step)
            return out
        have = set(keys)
        out.answer = answer
        out.main = [f"{question} {answer}"]
        out.extra = [
            q
            for q in unique([f"{question} {answer}", *(f"{s} {answer}" for s in subs[1:])])
            if norm_query(q) not in have
        ]
        step.output = {"answer": answer, "queries": out.extra}
        out.trace.append(step)
        return out

    async def _chain(
        self,
        answerer: Answerer,
        question: str,
        sub_questions: list[str],
        queries: list[str],
        lists: list[list[Document]],
    ) -> _Bridge:
        """The chain bridge (:func:`run_chain`) over the sub-questions, reusing the lists
        already searched; its searches join the fusion."""
        known = {norm_query(q): docs for q, docs in zip(queries, lists, strict=True)}
        ch = await run_chain(
            question,
            sub_questions,
            answerer=answerer,
            retrieve=self._retrieve,
            known=known,
            bridge_k=self.bridge_k,
        )
        first = ch.hops[0].answer if ch.hops else None
        return _Bridge(
            answer=first,
            queries=ch.queries,
            lists=ch.lists,
            main=[ch.main] if ch.main else [],
            hops=ch.hops,
            counters=ch.counters,
            trace=ch.trace,
            usage=ch.usage,
        )

    async def arun_many(self, questions: Sequence[str], *, concurrency: int = 1) -> list[PipelineResult]:
        """Run several questions, at most ``concurrency`` at a time, in order.

        Each question keeps its own limit of ``self.concurrency`` searches in flight, so
        up to ``concurrency * self.concurrency`` searches run at once."""
        return await gather_bounded((self.arun(q) for q in questions), concurrency)

    def run(self, question: str) -> PipelineResult:
        """Sync facade of :meth:`arun`."""
        return run_sync(self.arun(question))

    @classmethod
    def from_preset(
        cls, name: str, retriever: Retriever, engine: LLM | None = None, **overrides: Any
    ) -> DecomposeRetrieveRerank:
        """The pipeline of a named QA system (:data:`hoprank.agents.presets.PRESETS`:
        ``a``, ``b``, ``c0``, ``c``), the benchmark's exact settings: decomposer, bridge
        answerer and reranker on ``engine``. ``overrides`` as ``hoprank eval -p``
        (``rrf_k=60``, ``ranker="icr"``, ``ranker=None`` for no rerank); ``ranker=`` may also
        be a ranker object."""
        from hoprank.agents.systems import pipeline_from_preset

        given = overrides.get("ranker")
        ranker = overrides.pop("ranker") if given is not None and not isinstance(given, str) else None
        return pipeline_from_preset(name, retriever, engine, ranker=ranker, overrides=overrides)
