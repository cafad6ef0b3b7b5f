"""``hoprank train first``: distil a teacher ranking into a FIRST student (a LoRA adapter).

Reads the training queries of a dataset (``--skip``/``--limit`` in file order), the
teacher (``qrels``: the dataset's grades over its first-stage candidates; a run folder of
``hoprank eval``: its ``results.jsonl`` scores; or a TREC run file), draws the windows
(:func:`hoprank.train.make_windows`) and trains (:func:`hoprank.train.train_first`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from hoprank.cli._common import (
    MODEL_OPTION,
    THREADS_OPTION,
    VERBOSE_OPTION,
    engine_spec,
    fail,
    parse_params,
    setup_logging,
    show_progress,
)
from hoprank.errors import ConfigError, DatasetError, HoprankError, InvalidInput
from hoprank.llm.spec import DEFAULT_API_KEY_ENV

__all__ = ["register"]

logger = logging.getLogger(__name__)

train_app = typer.Typer(
    name="train", help="Distil a teacher ranking into a local model (LoRA adapters).", no_args_is_help=True
)

EXIT_INTERRUPTED = 130


class Loss(str, Enum):
    ranknet = "ranknet"
    listnet = "listnet"


def _results_ranked(path: Path) -> dict[str, list[tuple[str, float | None]]]:
    """``qid -> [(docid, score), ...]`` of a run folder's ``results.jsonl``, read only (an
    unreadable line, e.g. one a running eval is writing, is skipped with a warning)."""
    file = path / "results.jsonl"
    if not file.is_file():
        raise DatasetError(f"--teacher {path}: a run folder needs a results.jsonl")
    out: dict[str, list[tuple[str, float | None]]] = {}
    for i, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            ranked = [(str(d), None if s is None else float(s)) for d, s in rec["ranked"]]
            out.setdefault(str(rec["qid"]), ranked)
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("%s:%d: skipping an unreadable results line: %s", file, i, e)
    return out


def _teacher_lists(ds: Any, teacher: str, first_stage: str | None, depth: int, qids: list[str]) -> list[Any]:
    from hoprank.runs import read_run
    from hoprank.train import qrels_teacher, run_teacher

    if teacher == "qrels":
        run = ds.run(first_stage)
        return [
            qrels_teacher(q, ds.queries[q].text, ds.candidates(q, run, depth), ds.qrels[q])
            for q in qids
            if q in run and ds.qrels.get(q)
        ]
    path = Path(teacher).expanduser()
    if path.is_dir():
        ranked = _results_ranked(path)
    elif path.is_file():
        ranked = {q: [(d, s) for d, s in hits] for q, hits in read_run(path).items()}
    else:
        raise InvalidInput(f"--teacher {teacher!r} is neither 'qrels', a run folder nor a TREC run file")
    return [run_teacher(q, ds.queries[q].text, ranked[q], ds.corpus, depth) for q in qids if q in ranked]


def _progress(enabled: bool, total: int) -> tuple[Any, Any]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=Console(stderr=True), disable=not enabled)
    return bar, bar.add_task("training", total=total)


def _interrupted(out: Path) -> typer.Exit:
    from hoprank.llm import read_adapter_info

    try:
        steps = read_adapter_info(out).meta.get("steps")
        typer.echo(f"interrupted: the adapter after {steps} steps is in {out}", err=True)
    except ConfigError:
        typer.echo("interrupted before the first step: no adapter written", err=True)
    return typer.Exit(EXIT_INTERRUPTED)


_DATASET: Any = typer.Option(..., "--dataset", "-d", help="Training dataset (folder or name).")
_TEACHER: Any = typer.Option(
    ..., "--teacher", help="'qrels', a `hoprank eval` run folder, or a TREC run file."
)
_OUT: Any = typer.Option(..., "--out", "-o", help="Adapter file to write (.safetensors).")
_FIRST_STAGE: Any = typer.Option(None, "--first-stage", help="Candidates run for --teacher qrels.")
_DEPTH: Any = typer.Option(20, "--depth", min=2, help="Teacher candidates per query.")
_SKIP: Any = typer.Option(0, "--skip", min=0, help="Skip the first N queries (keep them for evaluation).")
_LIMIT: Any = typer.Option(None, "--limit", min=1, help="Train on at most N queries.")
_WINDOW: Any = typer.Option(10, "--window", min=2, max=26, help="Passages per window.")
_WPQ: Any = typer.Option(1, "--windows-per-query", min=1, help="The teacher's top window, then random ones.")
_EPOCHS: Any = typer.Option(1, "--epochs", min=1)
_LR: Any = typer.Option(1e-4, "--lr", help="AdamW learning rate (constant).")
_LOSS: Any = typer.Option(Loss.ranknet, "--loss", help="FIRST's weighted RankNet, or ListNet.")
_R: Any = typer.Option(8, "--lora-r", min=1, help="LoRA rank.")
_ALPHA: Any = typer.Option(16, "--lora-alpha", min=1, help="LoRA alpha (scaling alpha / r).")
_ACCUM: Any = typer.Option(1, "--grad-accum", min=1, help="Windows per optimizer step.")
_SEED: Any = typer.Option(0, "--seed", help="Seeds the windows, their order and the LoRA init.")
_MPT: Any = typer.Option(100, "--max-passage-tokens", min=1, help="FIRST's per-passage token cap.")
_SET: Any = typer.Option(
    None,
    "--set",
    help="Other training setting key=value: dropout, targets, weight_decay, max_grad_norm, listnet_temperature.",
)
_PARAM: Any = typer.Option(None, "--param", "-p", help="FIRST parameter key=value (label_tokens, prompt...).")
_ENGINE_PARAM: Any = typer.Option(None, "--engine-param", help="Engine parameter key=value.")
_PROGRESS: Any = typer.Option(True, "--progress/--no-progress", help="Progress bar (on a terminal).")


@train_app.command("first")
def first_cmd(
    dataset: str = _DATASET,
    teacher: str = _TEACHER,
    out: Path = _OUT,
    model: str | None = MODEL_OPTION,
    first_stage: str | None = _FIRST_STAGE,
    depth: int = _DEPTH,
    skip: int = _SKIP,
    limit: int | None = _LIMIT,
    window: int = _WINDOW,
    windows_per_query: int = _WPQ,
    epochs: int = _EPOCHS,
    lr: float = _LR,
    loss: Loss = _LOSS,
    lora_r: int = _R,
    lora_alpha: int = _ALPHA,
    grad_accum: int = _ACCUM,
    seed: int = _SEED,
    max_passage_tokens: int = _MPT,
    setting: list[str] | None = _SET,
    param: list[str] | None = _PARAM,
    engine_param: list[str] | None = _ENGINE_PARAM,
    threads: int | None = THREADS_OPTION,
    progress: bool = _PROGRESS,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Train a LoRA adapter so that FIRST ranks windows as the teacher does."""
    setup_logging(verbose)
    try:
        from hoprank.train import FirstTrainConfig

        config = FirstTrainConfig(
            **{
                "window": window,
                "windows_per_query": windows_per_query,
                "depth": depth,
                "epochs": epochs,
                "lr": lr,
                "loss": loss.value,
                "r": lora_r,
                "alpha": lora_alpha,
                "grad_accum": grad_accum,
                "seed": seed,
                "max_passage_tokens": max_passage_tokens,
                "first_params": parse_params(param),
                **parse_params(setting, "--set"),
            }
        )
        spec = engine_spec(model, None, DEFAULT_API_KEY_ENV, threads)
        source = _Source(dataset, teacher, first_stage, skip, limit)
        engine_params = parse_params(engine_param, "--engine-param")
        result = _train(config, spec, source, out, engine_params, progress and show_progress(False))
    except KeyboardInterrupt:
        raise _interrupted(out) from None
    except (HoprankError, OSError) as e:
        raise fail(e) from e
    typer.echo(json.dumps(result, indent=1))


@dataclass(frozen=True)
class _Source:
    """Where the training queries and the teacher come from."""

    dataset: str
    teacher: str
    first_stage: str | None
    skip: int
    limit: int | None


def _train(
    config: Any, spec: Any, src: _Source, out: Path, engine_params: dict[str, Any], progress: bool
) -> dict[str, Any]:
    from hoprank.evals.formats import load_dataset
    from hoprank.llm import load_engine
    from hoprank.train import make_windows, train_first

    if out.suffix != ".safetensors":
        raise InvalidInput(f"--out {out}: the adapter file must end in .safetensors")
    if spec.is_remote:
        raise ConfigError("training needs a local model (a pack, folder or .gguf)")
    ds = load_dataset(src.dataset)
    qids = list(ds.queries)[src.skip : src.skip + src.limit if src.limit is not None else None]
    lists = _teacher_lists(ds, src.teacher, src.first_stage, config.depth, qids)
    windows = make_windows(
        lists, window=config.window, windows_per_query=config.windows_per_query, seed=config.seed
    )
    if not windows:
        raise DatasetError(f"no training windows: {len(qids)} queries selected, {len(lists)} with a teacher")
    engine = load_engine(spec.model, **{**engine_params, **spec.engine_kwargs()})
    provenance = {
        "dataset": ds.name,
        "dataset_source": ds.source,
        "dataset_hash": ds.content_hash,
        "teacher": src.teacher,
        "first_stage": src.first_stage,
        "skip": src.skip,
        "limit": src.limit,
        "qids": [tl.qid for tl in lists],
    }
    total = config.epochs * math.ceil(len(windows) / config.grad_accum)
    bar, task = _progress(progress, total)
    with bar:

        def on_step(s: Any) -> None:
            bar.update(task, advance=1, description=f"epoch {s.epoch} loss {s.loss:.4f}")

        result = train_first(engine, windows, out=out, config=config, provenance=provenance, on_step=on_step)
    return {
        "adapter": str(out),
        "sha256": result.adapter.sha256,
        "base_model": result.adapter.base_model,
        "steps": result.steps,
        "windows": result.windows,
        "queries": len({w.qid for w in windows}),
        "first_loss": result.losses[0] if result.losses else None,
        "last_loss": result.losses[-1] if result.losses else None,
        "seconds": round(result.seconds, 1),
        "seconds_per_step": round(result.seconds / max(1, result.steps), 2),
        "log": str(result.log_path),
    }


def register(app: typer.Typer) -> None:
    app.add_typer(train_app)
