"""Request and response bodies of the HTTP API (Cohere/Jina-compatible rerank)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AskRequest",
    "AskResponse",
    "Citation",
    "DecomposeRequest",
    "DecomposeResponse",
    "DocumentIn",
    "ErrorBody",
    "ErrorInfo",
    "HealthResponse",
    "RerankMeta",
    "RerankRequest",
    "RerankResponse",
    "RerankResult",
    "ReturnedDocument",
    "UsageOut",
    "V2RerankRequest",
]


class DocumentIn(BaseModel):
    """A document given as an object (a plain string is accepted too)."""

    model_config = ConfigDict(extra="ignore")

    text: str
    title: str | None = None
    id: str | None = None


class RerankRequest(BaseModel):
    """Cohere/Jina rerank request.

    ``model`` is informational unless it names an enabled ranker (``first`` or
    ``hoprank-first``); ``ranker`` picks the ranker explicitly and wins over ``model``.
    ``top_n`` keeps the best n results (default: all). ``return_documents`` (default
    false, as in Cohere) adds each document's text to its result.
    """

    model: str | None = None
    query: str
    documents: list[str | DocumentIn]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    ranker: str | None = None


class V2RerankRequest(BaseModel):
    """Cohere v2 rerank request (``cohere.ClientV2().rerank``): documents are strings (objects
    with ``text`` are accepted too); ``max_tokens_per_doc`` and ``priority`` are accepted and
    ignored (each ranker has its own passage budget); ``ranker`` is hoprank's extension."""

    model: str | None = None
    query: str
    documents: list[str | DocumentIn]
    top_n: int | None = Field(default=None, ge=1)
    max_tokens_per_doc: int | None = Field(default=None, ge=1)
    priority: int | None = None
    ranker: str | None = None


class ReturnedDocument(BaseModel):
    text: str
    title: str | None = None
    id: str | None = None


class RerankResult(BaseModel):
    index: int = Field(description="position of the document in the request")
    relevance_score: float = Field(
        description="in [0, 1], non-increasing with rank; a probability or 1/rank (see meta.score_kind)"
    )
    document: ReturnedDocument | None = None


class UsageOut(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    llm_calls: int = 0
    seconds: float = 0.0
    search_units: int = 0


class RerankMeta(BaseModel):
    api_version: dict[str, str] | None = None
    ranker: str
    score_kind: str = Field(
        description="'probability' (pointwise P(yes), FIRST's label probability: comparable across "
        "requests) or 'rank' (1/rank, for rank-based rankers)"
    )
    fallbacks: int = 0
    usage: UsageOut
    billed_units: dict[str, int] = Field(default_factory=dict)


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    meta: RerankMeta
    usage: dict[str, int] = Field(default_factory=dict, description="Jina-style {total_tokens}")


class DecomposeRequest(BaseModel):
    question: str


class DecomposeResponse(BaseModel):
    id: str
    question: str
    sub_questions: list[str]
    usage: UsageOut


class AskRequest(BaseModel):
    question: str
    top_k: int | None = Field(default=None, ge=1)


class Citation(BaseModel):
    id: str
    title: str | None = None
    text: str
    score: float | None = None


class AskResponse(BaseModel):
    id: str
    question: str
    answer: str
    citations: list[Citation] = Field(description="evidence passages the answer cites")
    evidence: list[Citation] = Field(default_factory=list, description="every passage the answerer saw")
    sub_questions: list[str] = Field(default_factory=list)
    usage: UsageOut


class HealthResponse(BaseModel):
    status: str
    version: str
    model: str | None
    rankers: list[str]
    default_ranker: str
    ask: bool


class ErrorInfo(BaseModel):
    type: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """Every error response: ``{"error": {"type", "message", "details"}, "request_id"}``."""

    error: ErrorInfo
    request_id: str | None = None
