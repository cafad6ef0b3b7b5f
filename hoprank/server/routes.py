"""The ``/v1`` endpoints' work: validate limits, run in a slot, shape the answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hoprank.adapters.scoring import relevance_scores
from hoprank.agents.decompose import Decomposition
from hoprank.errors import InvalidInput
from hoprank.server.limits import check_limit
from hoprank.server.schemas import (
    AskRequest,
    AskResponse,
    Citation,
    DecomposeRequest,
    DecomposeResponse,
    DocumentIn,
    RerankMeta,
    RerankRequest,
    RerankResponse,
    RerankResult,
    ReturnedDocument,
    UsageOut,
)
from hoprank.server.state import ServiceState
from hoprank.types import Document, Ranking, Usage

__all__ = ["do_ask", "do_decompose", "do_rerank", "usage_out"]

Disconnected = Callable[[], Awaitable[bool]] | None
"""``request.is_disconnected``: polled while the work runs, to cancel it when the client has gone."""


def usage_out(usage: Usage, *, search_units: int = 0) -> UsageOut:
    return UsageOut(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        llm_calls=usage.llm_calls,
        seconds=round(usage.seconds, 6),
        search_units=search_units,
    )


def _check_text(state: ServiceState, text: str, what: str) -> str:
    check_limit("max_query_chars", state.settings.max_query_chars, len(text), what)
    if not text.strip():
        raise InvalidInput(f"{what} must not be empty")
    return text


def _to_documents(state: ServiceState, items: list[str | DocumentIn]) -> list[Document]:
    s = state.settings
    check_limit("max_documents", s.max_documents, len(items), "number of documents")
    docs: list[Document] = []
    for i, item in enumerate(items):
        d = item if isinstance(item, DocumentIn) else DocumentIn(text=item)
        size = len(d.text) + len(d.title or "")
        check_limit("max_document_chars", s.max_document_chars, size, f"characters in document {i}")
        metadata: dict[str, Any] = {"index": i}
        if d.id is not None:
            metadata["client_id"] = d.id
        # Internal ids are positions, so client ids may repeat or be absent.
        docs.append(Document(id=str(i), text=d.text, title=d.title, metadata=metadata))
    return docs


async def do_rerank(
    state: ServiceState, req: RerankRequest, request_id: str, *, is_disconnected: Disconnected = None
) -> RerankResponse:
    """Rerank ``req.documents`` for ``req.query``.

    An empty ``documents`` list is not an error: the answer has no results (and no model
    runs). Each result's ``index`` is the document's position in the request.
    """
    _check_text(state, req.query, "query")
    name = state.resolve_ranker_name(req.ranker, req.model)
    docs = _to_documents(state, req.documents)
    if docs:
        ranker = await state.get_ranker(name)
        query, top_n = req.query, req.top_n

        async def work() -> Ranking:
            return await ranker.arank(query, docs, top_k=top_n)

        ranking = await state.run_limited(work, is_disconnected=is_disconnected)
    else:
        ranking = Ranking(query=req.query, documents=[])
    scores, kind = relevance_scores(ranking)
    results: list[RerankResult] = []
    for doc, score in zip(ranking.documents, scores, strict=True):
        index = int(doc.id)
        returned = None
        if req.return_documents:
            client_id = doc.metadata.get("client_id")
            returned = ReturnedDocument(
                text=doc.text, title=doc.title, id=str(client_id) if client_id is not None else None
            )
        results.append(RerankResult(index=index, relevance_score=score, document=returned))
    state.metrics.documents.labels(name).inc(len(docs))
    _count_tokens(state, ranking.usage)
    usage = usage_out(ranking.usage, search_units=1 if docs else 0)
    return RerankResponse(
        id=request_id,
        model=_model_name(state, name),  # the served model, not what the client sent
        results=results,
        meta=RerankMeta(
            api_version={"version": "1"},
            ranker=name,
            score_kind=kind,
            fallbacks=ranking.fallbacks,
            usage=usage,
            billed_units={"search_units": usage.search_units},
        ),
        usage={"total_tokens": usage.total_tokens},
    )


def _model_name(state: ServiceState, ranker: str) -> str:
    model = state.settings.model
    return f"hoprank-{ranker}" + (f"/{model}" if model and ranker != "identity" else "")


def _count_tokens(state: ServiceState, usage: Usage) -> None:
    if usage.prompt_tokens:
        state.metrics.tokens.labels("prompt").inc(usage.prompt_tokens)
    if usage.completion_tokens:
        state.metrics.tokens.labels("completion").inc(usage.completion_tokens)


async def do_decompose(
    state: ServiceState, req: DecomposeRequest, request_id: str, *, is_disconnected: Disconnected = None
) -> DecomposeResponse:
    """Split a multi-hop question into sub-questions with the configured decomposer."""
    question = _check_text(state, req.question, "question").strip()
    decomposer = state.get_decomposer()

    async def work() -> Any:
        return await decomposer.adecompose(question)

    result = await state.run_limited(work, is_disconnected=is_disconnected)
    # a custom decomposer may return any object with ``sub_questions`` (and no usage)
    usage = result.usage if isinstance(result, Decomposition) else Usage()
    _count_tokens(state, usage)
    return DecomposeResponse(
        id=request_id,
        question=question,
        sub_questions=list(result.sub_questions),
        usage=usage_out(usage),
    )


def _citation(d: Document) -> Citation:
    return Citation(id=d.id, title=d.title, text=d.text, score=d.score)


async def do_ask(
    state: ServiceState, req: AskRequest, request_id: str, *, is_disconnected: Disconnected = None
) -> AskResponse:
    """Answer a question over the configured corpus, with the evidence it cites."""
    question = _check_text(state, req.question, "question").strip()
    top_k = req.top_k or min(5, state.settings.max_top_k)
    check_limit("max_top_k", state.settings.max_top_k, top_k, "top_k")
    asker = state.asker
    if asker is None:  # the route exists only when an asker is configured
        raise InvalidInput("this server has no corpus configured for /v1/ask")

    async def work() -> Any:
        return await asker(question, top_k=top_k)

    outcome = await state.run_limited(work, is_disconnected=is_disconnected)
    _count_tokens(state, outcome.usage)
    return AskResponse(
        id=request_id,
        question=question,
        answer=outcome.answer,
        citations=[_citation(d) for d in outcome.citations],
        evidence=[_citation(d) for d in outcome.evidence],
        sub_questions=outcome.sub_questions,
        usage=usage_out(outcome.usage),
    )
