"""``hoprank decompose`` and ``hoprank ask``: the agent layer from the command line.

``decompose`` prints the sub-questions of each question. ``ask`` answers a question over
a JSONL corpus (``{"id", "text", "title"?}`` per line) indexed with BM25, either with
the decompose-retrieve-rerank pipeline and the answerer (``--mode pipeline``) or with the
iterative multi-hop agent (``--mode agent``).

Exit codes: the table in :mod:`hoprank.cli._common` (0 ok, 2 bad input, 1 engine failure).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from hoprank.cli._common import (
    API_KEY_ENV_OPTION,
    BASE_URL_OPTION,
    MODEL_OPTION,
    THREADS_OPTION,
    VERBOSE_OPTION,
    check_model,
    check_ranker,
    engine_spec,
    fail,
    progress_display,
    ranker_help,
    setup_logging,
    show_progress,
)
from hoprank.errors import DatasetError, HoprankError, InvalidInput

__all__ = ["register"]

logger = logging.getLogger(__name__)


def _engine(model: str | None, base_url: str | None, api_key_env: str, threads: int | None) -> Any:
    """The engine the options name (a seam the tests replace with a loaded model); an
    unknown model is refused before anything loads."""
    spec = engine_spec(model, base_url, api_key_env, threads)
    check_model(spec)
    return spec.load()


def decompose_cmd(
    questions: list[str] = typer.Argument(..., help="One or more questions."),
    model: str | None = MODEL_OPTION,
    base_url: str | None = BASE_URL_OPTION,
    api_key_env: str = API_KEY_ENV_OPTION,
    max_sub_questions: int = typer.Option(
        4, "--max-sub-questions", min=1, help="At most this many sub-questions."
    ),
    prompt: str | None = typer.Option(None, "--prompt", help="Prompt name@version or YAML path."),
    max_tokens: int = typer.Option(200, "--max-tokens", min=1, help="Generation cap per model call."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per question, with the trace."),
    threads: int | None = THREADS_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Split questions into sub-questions."""
    from hoprank.agents import Decomposer

    setup_logging(verbose)
    try:
        decomposer = Decomposer(
            _engine(model, base_url, api_key_env, threads),
            prompt=prompt,
            max_sub_questions=max_sub_questions,
            max_tokens=max_tokens,
        )
        results = asyncio.run(decomposer.adecompose_many(questions))
    except (HoprankError, ModuleNotFoundError) as e:
        raise fail(e) from e
    for dec in results:
        if as_json:
            typer.echo(dec.model_dump_json())
            continue
        typer.echo(dec.question)
        for i, sq in enumerate(dec.sub_questions, 1):
            typer.echo(f"  {i}. {sq}")
        if dec.fallback:
            typer.echo("  (fallback: the model's output could not be parsed)")


async def _ask(
    question: str,
    *,
    engine: Any,
    corpus: Path,
    mode: str,
    ranker_name: str,
    k: int,
    top_k: int,
    max_steps: int,
    short: bool,
    max_tokens: int | None,
    status: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    from hoprank.agents import Answerer, Budget, Decomposer, DecomposeRetrieveRerank, MultiHopAgent
    from hoprank.tools.bm25 import BM25Retriever

    status(f"indexing {corpus.name}")
    retriever = await asyncio.to_thread(BM25Retriever.from_jsonl, corpus)
    ranker = None
    if ranker_name != "none":
        from hoprank.rankers import make_ranker

        ranker = make_ranker(ranker_name, engine=engine)
    answerer = Answerer(engine, mode="short" if short else "long", max_tokens=max_tokens)
    cap: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
    out: dict[str, Any] = {"question": question, "mode": mode}
    if mode == "agent":
        agent = MultiHopAgent(
            engine, retriever, budget=Budget(max_steps=max_steps), k=k, ranker=ranker, **cap
        )
        status(f"multi-hop agent (at most {max_steps} steps)")
        res = await agent.arun(question)
        out["agent"] = json.loads(res.model_dump_json())
        if res.state == "answered" and res.answer:
            # the agent's evidence starts with what it cited: keep every cited passage
            evidence = res.evidence[: max(top_k, len(res.citations))]
            out["answer"], out["citations"] = res.answer, res.citations
        else:
            evidence = res.evidence[:top_k]
            status("answering from the evidence")
            ans = await answerer.aanswer(question, evidence)
            out["answer"], out["citations"] = ans.answer, ans.citations
            out["answerer"] = json.loads(ans.model_dump_json())
    else:
        pipe = DecomposeRetrieveRerank(
            retriever,
            decomposer=Decomposer(engine, **cap),
            ranker=ranker,
            k=k,
            pool_depth=max(20, top_k),
            top_k=top_k,
        )
        status("decomposing, retrieving" + (", reranking" if ranker is not None else ""))
        pres = await pipe.arun(question)
        evidence = pres.evidence
        status("answering from the evidence")
        ans = await answerer.aanswer(question, evidence)
        out["pipeline"] = json.loads(pres.model_dump_json())
        out["answerer"] = json.loads(ans.model_dump_json())
        out["answer"], out["citations"] = ans.answer, ans.citations
    out["evidence"] = [{"id": d.id, "title": d.title, "score": d.score} for d in evidence]
    return out


def ask_cmd(
    question: str = typer.Argument(..., help="The question."),
    corpus: Path = typer.Option(..., "--corpus", "-c", help="JSONL corpus: {id, text, title?} per line."),
    mode: str = typer.Option(
        "pipeline", "--mode", help="pipeline (decompose, retrieve, rerank, answer) or agent."
    ),
    model: str | None = MODEL_OPTION,
    base_url: str | None = BASE_URL_OPTION,
    api_key_env: str = API_KEY_ENV_OPTION,
    ranker: str = typer.Option("none", "--ranker", "-r", help=ranker_help("none (BM25 order) or one of: ")),
    k: int = typer.Option(10, "--k", min=1, help="Documents retrieved per query."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Evidence passages given to the answerer."),
    max_steps: int = typer.Option(4, "--max-steps", min=1, help="Agent step budget (--mode agent)."),
    short: bool = typer.Option(False, "--short", help="A few-words answer."),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", min=1, help="Generation cap per model call (default: each component's own)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full result (with traces) as JSON."),
    threads: int | None = THREADS_OPTION,
    quiet: bool = typer.Option(False, "--quiet", help="No progress display on stderr."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Answer a question over a JSONL corpus with cited passages.

    What it is doing (loading the model, indexing, the pipeline or agent, answering) and
    the time spent show on stderr when it is a terminal."""
    setup_logging(verbose)
    try:
        if mode not in ("pipeline", "agent"):
            raise InvalidInput(f"--mode must be 'pipeline' or 'agent', got {mode!r}")
        if not corpus.is_file():
            raise DatasetError(f"corpus file not found: {corpus}")
        if ranker != "none":
            ranker = check_ranker(ranker, {})
        with progress_display(show_progress(quiet)) as display:
            task = display.add_task("loading the model", total=None)

            def status(text: str) -> None:
                display.update(task, description=text)

            engine = _engine(model, base_url, api_key_env, threads)
            out = asyncio.run(
                _ask(
                    question,
                    engine=engine,
                    corpus=corpus,
                    mode=mode,
                    ranker_name=ranker,
                    k=k,
                    top_k=top_k,
                    max_steps=max_steps,
                    short=short,
                    max_tokens=max_tokens,
                    status=status,
                )
            )
    except (HoprankError, ModuleNotFoundError) as e:
        raise fail(e) from e
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    typer.echo(f"Answer: {out['answer']}")
    typer.echo(f"Citations: {', '.join(out['citations']) or '(none)'}")
    for ev in out["evidence"]:
        typer.echo(f"  [{ev['id']}] {ev['title'] or ''}")


def register(app: typer.Typer) -> None:
    """Add ``decompose`` and ``ask`` to the ``hoprank`` CLI."""
    app.command("decompose")(decompose_cmd)
    app.command("ask")(ask_cmd)
