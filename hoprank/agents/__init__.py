"""hoprank.agents: decomposition, query rewriting, the decompose-retrieve-rerank
pipeline, the iterative multi-hop agent and the cited answerer."""

from hoprank.agents.answer import Answer, Answerer, clean_short_answer, parse_citations
from hoprank.agents.decompose import Decomposer, Decomposition, SubQuestions
from hoprank.agents.multihop import AgentAction, AgentResult, Budget, MultiHopAgent
from hoprank.agents.pipeline import DecomposeRetrieveRerank, PipelineResult
from hoprank.agents.rewrite import Rewrite, Rewriter

__all__ = [
    "AgentAction",
    "AgentResult",
    "Answer",
    "Answerer",
    "Budget",
    "DecomposeRetrieveRerank",
    "Decomposer",
    "Decomposition",
    "MultiHopAgent",
    "PipelineResult",
    "Rewrite",
    "Rewriter",
    "SubQuestions",
    "clean_short_answer",
    "parse_citations",
]
