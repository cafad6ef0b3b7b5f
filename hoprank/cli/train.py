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
from typing import Annotated, Any

import typer

from hoprank.cli._common import (
    VERBOSE_OPTION,
    EngineOptions,
    fail,
    parse_params,
    setup_logging,
    show_progress,
)
from hoprank.cli._options import OptionGroup, with_option_groups
from hoprank.errors import ConfigError, DatasetError, HoprankError, InvalidInput

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


_TEACHER_HELP = "'qrels', a `hoprank eval` run folder, or a TREC run file."
_SET_HELP = (
    "Other training setting key=value: dropout, targets, weight_decay, max_grad_norm, listnet_temperature."
)
_PROGRESS: Any = typer.Option(True, "--progress/--no-progress", help="Progress bar (on a terminal).")


@dataclass(frozen=True, kw_only=True)
class SourceOptions(OptionGroup):
    """Where the training queries and the teacher come from (an option group)."""

    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Training dataset (folder or name).")]
    teacher: Annotated[str, typer.Option("--teacher", help=_TEACHER_HELP)]
    first_stage: Annotated[
        str | None, typer.Option("--first-stage", help="Candidates run for --teacher qrels.")
    ] = None
    skip: Annotated[
        int, typer.Option("--skip", min=0, help="Skip the first N queries (keep them for evaluation).")
    ] = 0
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Train on at most N queries.")] = None

    def source(self) -> _Source:
        return _Source(self.dataset, self.teacher, self.first_stage, self.skip, self.limit)


@dataclass(frozen=True, kw_only=True)
class TrainOptions(OptionGroup):
    """The student's training settings: :class:`~hoprank.train.FirstTrainConfig` (an option group)."""

    depth: Annotated[int, typer.Option("--depth", min=2, help="Teacher candidates per query.")] = 20
    window: Annotated[int, typer.Option("--window", min=2, max=26, help="Passages per window.")] = 10
    windows_per_query: Annotated[
        int, typer.Option("--windows-per-query", min=1, help="The teacher's top window, then random ones.")
    ] = 1
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 1
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate (constant).")] = 1e-4
    loss: Annotated[Loss, typer.Option("--loss", help="FIRST's weighted RankNet, or ListNet.")] = Loss.ranknet
    lora_r: Annotated[int, typer.Option("--lora-r", min=1, help="LoRA rank.")] = 8
    lora_alpha: Annotated[
        int, typer.Option("--lora-alpha", min=1, help="LoRA alpha (scaling alpha / r).")
    ] = 16
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Windows per optimizer step.")] = 1
    seed: Annotated[int, typer.Option("--seed", help="Seeds the windows, their order and the LoRA init.")] = 0
    max_passage_tokens: Annotated[
        int, typer.Option("--max-passage-tokens", min=1, help="FIRST's per-passage token cap.")
    ] = 100
    setting: Annotated[list[str] | None, typer.Option("--set", help=_SET_HELP)] = None
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="FIRST parameter key=value (label_tokens, prompt...)."),
    ] = None

    def config(self) -> Any:
        from hoprank.train import FirstTrainConfig

        return FirstTrainConfig(
            **{
                "window": self.window,
                "windows_per_query": self.windows_per_query,
                "depth": self.depth,
                "epochs": self.epochs,
                "lr": self.lr,
                "loss": self.loss.value,
                "r": self.lora_r,
                "alpha": self.lora_alpha,
                "grad_accum": self.grad_accum,
                "seed": self.seed,
                "max_passage_tokens": self.max_passage_tokens,
                "first_params": parse_params(self.param),
                **parse_params(self.setting, "--set"),
            }
        )


@dataclass(frozen=True, kw_only=True)
class LocalModelOptions(OptionGroup):
    """The local base model trained on (an option group)."""

    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Engine spec: a pack name, a folder, a .gguf.")
    ] = None
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for a local model.")
    ] = None
    engine_param: Annotated[
        list[str] | None, typer.Option("--engine-param", help="Engine parameter key=value.")
    ] = None


@train_app.command("first")
@with_option_groups
def first_cmd(
    *,
    source: SourceOptions,
    training: TrainOptions,
    base: LocalModelOptions,
    out: Path = typer.Option(..., "--out", "-o", help="Adapter file to write (.safetensors)."),
    progress: bool = _PROGRESS,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Train a LoRA adapter so that FIRST ranks windows as the teacher does."""
    setup_logging(verbose)
    try:
        config = training.config()
        spec = EngineOptions(model=base.model, threads=base.threads).spec()
        engine_params = parse_params(base.engine_param, "--engine-param")
        result = _train(config, spec, source.source(), out, engine_params, progress and show_progress(False))
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
