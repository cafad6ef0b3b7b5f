"""hoprank.agents: decomposition, query rewriting, the decompose-retrieve-rerank
pipeline, the iterative multi-hop agent, the cited answerer, and QA systems as data
(:class:`QASystem`, the named :data:`PRESETS` a, b, c0, c, d, :func:`build_system`)."""

from hoprank.agents.action import AgentAction
from hoprank.agents.answer import Answer, Answerer, clean_short_answer, parse_citations
from hoprank.agents.decompose import Decomposer, Decomposition, SubQuestions
from hoprank.agents.multihop import AgentResult, Budget, MultiHopAgent
from hoprank.agents.pipeline import DecomposeRetrieveRerank, PipelineConfig, PipelineResult
from hoprank.agents.presets import PRESETS, QASystem, preset, resolve_systems
from hoprank.agents.rewrite import Rewrite, Rewriter
from hoprank.agents.systems import QAOutput, QARunner, build_retriever, build_system

__all__ = [
    "PRESETS",
    "AgentAction",
    "AgentResult",
    "Answer",
    "Answerer",
    "Budget",
    "DecomposeRetrieveRerank",
    "Decomposer",
    "Decomposition",
    "MultiHopAgent",
    "PipelineConfig",
    "PipelineResult",
    "QAOutput",
    "QARunner",
    "QASystem",
    "Rewrite",
    "Rewriter",
    "SubQuestions",
    "build_retriever",
    "build_system",
    "clean_short_answer",
    "parse_citations",
    "preset",
    "resolve_systems",
]
