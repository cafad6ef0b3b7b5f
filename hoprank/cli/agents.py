"""``hoprank decompose`` and ``hoprank ask``: the agent layer from the command line.

``decompose`` prints the sub-questions of each question. ``ask`` answers a question over
a JSONL corpus (``{"id", "text", "title"?}`` per line) indexed with BM25, either with
the decompose-retrieve-rerank pipeline and the answerer (``--mode pipeline``) or with the
iterative multi-hop agent (``--mode agent``).

Exit codes: the table in :mod:`hoprank.cli._common` (0 ok, 2 bad input, 1 engine failure).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from hoprank.cli._common import (
    QUIET_OPTION,
    VERBOSE_OPTION,
    EngineOptions,
    check_ranker,
    fail,
    progress_display,
    ranker_help,
    setup_logging,
    show_progress,
)
from hoprank.cli._options import OptionGroup, with_option_groups
from hoprank.errors import DatasetError, HoprankError, InvalidInput
from hoprank.types import Document

__all__ = ["AskOptions", "register"]

logger = logging.getLogger(__name__)

Status = Callable[[str], None]


def _engine(options: EngineOptions) -> Any:
    """The engine the options name (a seam the tests replace with a loaded model); an
    unknown model is refused before anything loads."""
    return options.load()


@with_option_groups
def decompose_cmd(
    questions: list[str] = typer.Argument(..., help="One or more questions."),
    *,
    engine: EngineOptions,
    max_sub_questions: int = typer.Option(
        4, "--max-sub-questions", min=1, help="At most this many sub-questions."
    ),
    prompt: str | None = typer.Option(None, "--prompt", help="Prompt name@version or YAML path."),
    max_tokens: int = typer.Option(200, "--max-tokens", min=1, help="Generation cap per model call."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per question, with the trace."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Split questions into sub-questions."""
    from hoprank.agents import Decomposer

    setup_logging(verbose)
    try:
        decomposer = Decomposer(
            _engine(engine), prompt=prompt, max_sub_questions=max_sub_questions, max_tokens=max_tokens
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
            how = "a rule split" if dec.fallback_to == "rule_split" else "no sub-questions"
            typer.echo(f"  (fallback to {how}: no usable reply from the model)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AskOptions(OptionGroup):
    """What ``hoprank ask`` does: over which corpus, how (``mode``, ``ranker``) and how much
    (an option group, see :mod:`hoprank.cli._options`)."""

    corpus: Annotated[Path, typer.Option("--corpus", "-c", help="JSONL corpus: {id, text, title?} per line.")]
    mode: Annotated[
        str, typer.Option("--mode", help="pipeline (decompose, retrieve, rerank, answer) or agent.")
    ] = "pipeline"
    ranker: Annotated[
        str, typer.Option("--ranker", "-r", help=ranker_help("none (BM25 order) or one of: "))
    ] = "none"
    k: Annotated[int, typer.Option("--k", min=1, help="Documents retrieved per query.")] = 10
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Evidence passages given to the answerer.")] = 5
    max_steps: Annotated[
        int, typer.Option("--max-steps", min=1, help="Agent step budget (--mode agent).")
    ] = 4
    short: Annotated[bool, typer.Option("--short", help="A few-words answer.")] = False
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens", min=1, help="Generation cap per model call (default: each component's own)."
        ),
    ] = None

    def checked(self) -> AskOptions:
        """The options once the mode, the corpus file and the ranker are checked (before
        any model loads); the ranker by its registered name."""
        if self.mode not in ("pipeline", "agent"):
            raise InvalidInput(f"--mode must be 'pipeline' or 'agent', got {self.mode!r}")
        if not self.corpus.is_file():
            raise DatasetError(f"corpus file not found: {self.corpus}")
        if self.ranker == "none":
            return self
        return dataclasses.replace(self, ranker=check_ranker(self.ranker, {}))

    @property
    def cap(self) -> dict[str, Any]:
        """The ``max_tokens`` keyword for the components, when ``--max-tokens`` is given."""
        return {"max_tokens": self.max_tokens} if self.max_tokens else {}


@dataclasses.dataclass
class _Asking:
    """What answering one question works with: the options, the engine, the retriever over
    the corpus, the ranker (None: BM25 order), the answerer and where to report status."""

    options: AskOptions
    engine: Any
    retriever: Any
    ranker: Any
    answerer: Any
    status: Status


async def _agent_answer(question: str, a: _Asking, out: dict[str, Any]) -> list[Document]:
    """``--mode agent``: the multi-hop agent, then the answerer if the agent gave no answer."""
    from hoprank.agents import Budget, MultiHopAgent

    opts = a.options
    agent = MultiHopAgent(
        a.engine, a.retriever, budget=Budget(max_steps=opts.max_steps), k=opts.k, ranker=a.ranker, **opts.cap
    )
    a.status(f"multi-hop agent (at most {opts.max_steps} steps)")
    res = await agent.arun(question)
    out["agent"] = json.loads(res.model_dump_json())
    if res.state == "answered" and res.answer:
        # the agent's evidence starts with what it cited: keep every cited passage
        out["answer"], out["citations"] = res.answer, res.citations
        return res.evidence[: max(opts.top_k, len(res.citations))]
    evidence = res.evidence[: opts.top_k]
    await _answer(question, evidence, a, out)
    return evidence


async def _pipeline_answer(question: str, a: _Asking, out: dict[str, Any]) -> list[Document]:
    """``--mode pipeline``: decompose, retrieve, rerank, then the answerer."""
    from hoprank.agents import Decomposer, DecomposeRetrieveRerank

    opts = a.options
    pipe = DecomposeRetrieveRerank(
        a.retriever,
        decomposer=Decomposer(a.engine, **opts.cap),
        ranker=a.ranker,
        k=opts.k,
        pool_depth=max(20, opts.top_k),
        top_k=opts.top_k,
    )
    a.status("decomposing, retrieving" + (", reranking" if a.ranker is not None else ""))
    pres = await pipe.arun(question)
    out["pipeline"] = json.loads(pres.model_dump_json())
    await _answer(question, pres.evidence, a, out)
    return pres.evidence


async def _answer(question: str, evidence: list[Document], a: _Asking, out: dict[str, Any]) -> None:
    a.status("answering from the evidence")
    ans = await a.answerer.aanswer(question, evidence)
    out["answer"], out["citations"] = ans.answer, ans.citations
    out["answerer"] = json.loads(ans.model_dump_json())


async def _ask(
    question: str, options: AskOptions, engine: Any, status: Status = lambda _: None
) -> dict[str, Any]:
    """Answer ``question`` as ``options`` say: the answer, its citations, the evidence and
    the traces."""
    from hoprank.agents import Answerer
    from hoprank.tools.bm25 import BM25Retriever

    status(f"indexing {options.corpus.name}")
    retriever = await asyncio.to_thread(BM25Retriever.from_jsonl, options.corpus)
    ranker = None
    if options.ranker != "none":
        from hoprank.rankers import make_ranker

        ranker = make_ranker(options.ranker, engine=engine)
    answerer = Answerer(engine, mode="short" if options.short else "long", max_tokens=options.max_tokens)
    asking = _Asking(options, engine, retriever, ranker, answerer, status)
    out: dict[str, Any] = {"question": question, "mode": options.mode}
    run = _agent_answer if options.mode == "agent" else _pipeline_answer
    evidence = await run(question, asking, out)
    out["evidence"] = [{"id": d.id, "title": d.title, "score": d.score} for d in evidence]
    return out


@with_option_groups
def ask_cmd(
    question: str = typer.Argument(..., help="The question."),
    *,
    options: AskOptions,
    engine: EngineOptions,
    as_json: bool = typer.Option(False, "--json", help="Print the full result (with traces) as JSON."),
    quiet: bool = QUIET_OPTION,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Answer a question over a JSONL corpus with cited passages.

    What it is doing (loading the model, indexing, the pipeline or agent, answering) and
    the time spent show on stderr when it is a terminal."""
    setup_logging(verbose)
    try:
        options = options.checked()
        with progress_display(show_progress(quiet)) as display:
            task = display.add_task("loading the model", total=None)

            def status(text: str) -> None:
                display.update(task, description=text)

            out = asyncio.run(_ask(question, options, _engine(engine), status))
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
