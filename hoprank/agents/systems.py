"""Building and running a :class:`~hoprank.agents.presets.QASystem`.

:func:`build_retriever` indexes a corpus the way the system says (or loads its index
folder); :func:`build_system` turns the config, a retriever and an engine into a
:class:`QARunner`, whose :meth:`QARunner.arun` answers one question with a
:class:`QAOutput`: the ranked passages, the answer and its citations, what the system did
(sub-questions, bridge answer, agent state and steps), usage and trace, with the
answering step's cost kept apart from the retrieval system's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from hoprank.agents.answer import Answerer
from hoprank.agents.decompose import Decomposer
from hoprank.agents.multihop import MultiHopAgent
from hoprank.agents.pipeline import DecomposeRetrieveRerank
from hoprank.agents.presets import PromptRole, QASystem, preset
from hoprank.errors import ConfigError
from hoprank.llm.base import LLM
from hoprank.prompts.registry import PromptTemplate
from hoprank.rankers.base import BaseRanker, Ranker, prompt_summary
from hoprank.tools.base import Retriever
from hoprank.types import Document, Step, Usage

__all__ = ["QAOutput", "QARunner", "build_retriever", "build_system", "pipeline_from_preset"]


class QAOutput(BaseModel):
    """One question's outcome. ``ranked``: the system's whole ordering (the pipeline's
    reranked pool then the rest of the fused list; the agent's evidence); ``usage``: the
    system's cost, ``answer_usage`` the answering step's; ``info``: what the system did
    (``sub_questions``, ``bridge``, ``queries``, ``decompose_fallback``; the agent's
    ``state``, ``steps``, ``reason``, ``agent_answer``)."""

    question: str
    ranked: list[Document] = Field(default_factory=list)
    answer: str | None = None
    citations: list[str] | None = None
    usage: Usage = Field(default_factory=Usage)
    answer_usage: Usage = Field(default_factory=Usage)
    info: dict[str, Any] = Field(default_factory=dict)
    trace: list[Step] = Field(default_factory=list)


def build_retriever(system: QASystem, docs: Sequence[Document]) -> Retriever:
    """The system's retriever: its ``index`` folder loaded, else ``docs`` indexed in
    memory (``bm25``, ``dense`` or ``hybrid`` with ``retriever_params``; a hybrid takes
    ``bm25`` and ``dense`` sub-mappings for its parts, the rest for the fusion)."""
    from hoprank.tools import BM25Retriever, DenseRetriever, HybridRetriever, load_index

    if system.index is not None:
        return load_index(system.index)
    params = dict(system.retriever_params)
    try:
        if system.retriever == "bm25":
            return BM25Retriever.from_documents(docs, **params)
        if system.retriever == "dense":
            return DenseRetriever.from_documents(docs, **params)
        bm25 = BM25Retriever.from_documents(docs, **params.pop("bm25", {}))
        dense = DenseRetriever.from_documents(docs, **params.pop("dense", {}))
        return HybridRetriever([bm25, dense], **params)
    except TypeError as e:
        raise ConfigError(f"bad retriever_params for {system.retriever}: {e}") from e


class QARunner:
    """A built system: ``await runner.arun(question)`` → :class:`QAOutput`."""

    def __init__(
        self,
        system: QASystem,
        *,
        pipeline: DecomposeRetrieveRerank | None = None,
        agent: MultiHopAgent | None = None,
        answerer: Answerer | None = None,
    ) -> None:
        if (pipeline is None) == (agent is None):
            raise ConfigError("a QA runner needs exactly one of a pipeline and an agent")
        self.system = system
        self.pipeline = pipeline
        self.agent = agent
        self.answerer = answerer

    def prompts(self) -> list[dict[str, Any]]:
        """The prompts the system renders, ``{"role", "name", "version", "hash", "ref"}`` each."""
        found: list[tuple[str, PromptTemplate]] = []
        p = self.pipeline
        if p is not None and p.decomposer is not None:
            found.append(("decompose", p.decomposer.prompt))
        if p is not None and p.bridge_answerer is not None:
            found.append(("bridge", p.bridge_answerer.prompt))
        if self.agent is not None:
            found.append(("agent", self.agent.prompt))
        ranker = p.ranker if p is not None else self.agent.ranker if self.agent is not None else None
        if isinstance(ranker, BaseRanker):
            tpl = ranker.prompt_template()
            if tpl is not None:
                found.append(("ranker", tpl))
        if self.answerer is not None:
            found.append(("answer", self.answerer.prompt))
        return [{"role": role, **prompt_summary(tpl)} for role, tpl in found]

    async def arun(self, question: str) -> QAOutput:
        """Retrieve (and rank) evidence for ``question``, then answer from its top passages."""
        out = await (self._pipeline(question) if self.pipeline is not None else self._agent(question))
        if self.answerer is not None:
            t0 = time.perf_counter()
            ans = await self.answerer.aanswer(question, out.ranked[: self.system.answer_k])
            out.answer = ans.answer
            out.info["answered_by"] = "answerer"
            if self.system.answer_mode == "long":
                out.citations = list(ans.citations)
            out.answer_usage = ans.usage.model_copy(update={"seconds": time.perf_counter() - t0})
            out.info["answer_steps"] = len(ans.trace)  # the trace's last steps are the answering's
            out.trace.extend(ans.trace)
        return out

    async def _pipeline(self, question: str) -> QAOutput:
        assert self.pipeline is not None
        res = await self.pipeline.arun(question)
        info: dict[str, Any] = {"queries": res.queries}
        if self.pipeline.decomposer is not None:
            info.update(sub_questions=res.sub_questions, decompose_fallback=res.fallback)
        if self.pipeline.bridge_answerer is not None:
            info["bridge"] = res.bridge
        return QAOutput(question=question, ranked=res.ranked, usage=res.usage, info=info, trace=res.trace)

    async def _agent(self, question: str) -> QAOutput:
        assert self.agent is not None
        res = await self.agent.arun(question)
        info: dict[str, Any] = {
            "state": res.state,
            "steps": res.steps,
            "reason": res.reason,
            "queries": res.queries,
            "agent_answer": res.answer,
            "agent_citations": res.citations,
        }
        out = QAOutput(question=question, ranked=res.evidence, usage=res.usage, info=info, trace=res.trace)
        out.citations = list(res.citations)  # the agent's; a long-mode Answerer's replace them
        if self.answerer is None:  # the agent's own answer stands
            out.answer = res.answer
            out.info["answered_by"] = "agent"
        return out


def _prompt(system: QASystem, role: PromptRole) -> str | None:
    return system.prompts.get(role)


def _need(engine: LLM | None, system: QASystem, what: str) -> LLM:
    if engine is None:
        raise ConfigError(f"QA system {system.name!r} needs an engine for {what} (give a model)")
    return engine


def build_system(
    system: QASystem, retriever: Retriever, engine: LLM | None = None, *, ranker: Ranker | None = None
) -> QARunner:
    """The runnable system: its pipeline or agent over ``retriever``, the LLM parts on
    ``engine``. ``ranker`` replaces the one ``system.ranker`` names (for tests and SDK use)."""
    if ranker is None and system.ranker is not None:
        from hoprank.rankers import make_ranker, ranker_spec

        eng = (
            _need(engine, system, f"ranker {system.ranker}")
            if ranker_spec(system.ranker).needs_engine
            else engine
        )
        ranker = make_ranker(system.ranker, eng, **system.ranker_params)
    answerer = None
    if system.answer:
        eng = _need(engine, system, "answering")
        answerer = Answerer(eng, mode=system.answer_mode, prompt=_prompt(system, "answer"))
    if system.kind == "agent":
        eng = _need(engine, system, "the agent")
        agent = MultiHopAgent(
            eng, retriever, config=system.agent, prompt=_prompt(system, "agent"), ranker=ranker
        )
        return QARunner(system, agent=agent, answerer=answerer)
    decomposer = bridge = None
    if system.decompose:
        decomposer = Decomposer(_need(engine, system, "decomposition"), prompt=_prompt(system, "decompose"))
    if system.bridge:
        eng = _need(engine, system, "the bridge")
        bridge = Answerer(eng, mode="short", prompt=_prompt(system, "bridge"))
    pipeline = DecomposeRetrieveRerank(
        retriever, config=system.pipeline, decomposer=decomposer, ranker=ranker, bridge_answerer=bridge
    )
    return QARunner(system, pipeline=pipeline, answerer=answerer)


def pipeline_from_preset(
    name: str | QASystem,
    retriever: Retriever,
    engine: LLM | None = None,
    *,
    ranker: Ranker | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> DecomposeRetrieveRerank:
    """The :class:`DecomposeRetrieveRerank` of a pipeline preset (``"c0"``, ``"c"``...):
    the benchmark's exact settings, with optional ``overrides`` (as ``-p``); ``ranker``
    (an object) replaces the one the system names."""
    from hoprank.agents.presets import apply_overrides

    system = apply_overrides(preset(name) if isinstance(name, str) else name, overrides or {})
    if system.kind != "pipeline":
        raise ConfigError(f"QA system {system.name!r} is an agent, not a pipeline")
    runner = build_system(system.model_copy(update={"answer": False}), retriever, engine, ranker=ranker)
    assert runner.pipeline is not None
    return runner.pipeline
