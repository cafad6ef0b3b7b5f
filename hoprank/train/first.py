"""Distil a teacher ranking into a FIRST student: a LoRA adapter (peft) on a local model.

Each training example is a :class:`~hoprank.train.data.Window` rendered by a
:class:`~hoprank.rankers.first.FIRST` ranker on the base engine
(:meth:`~hoprank.rankers.first.FIRST.window_request`: the very prompt, label tokens and
prefill FIRST scores at inference). One forward gives the logits of the window's label
tokens at the first generated position; the loss (:mod:`hoprank.train.losses`: FIRST's
weighted RankNet, or ListNet) compares them with the teacher's scores. Only the LoRA
factors of the target projections train (``r``, ``alpha``, dropout); AdamW, constant
learning rate, gradients accumulated over ``grad_accum`` windows per step and clipped.

Every model computation runs as a job on the torch worker thread
(the engine's :class:`~hoprank.llm.runtime.worker.TorchWorker`, the thread it computes on), driven
from the calling thread. A ``KeyboardInterrupt`` lands in the caller, while the worker
finishes the job it is on; the adapter of the steps done so far is then saved (queued
behind that job, so it is never half an update) with ``"complete": false`` before the
interrupt propagates. The adapter is also saved after each epoch, always atomically.
Each step's loss goes to ``<adapter stem>.train.jsonl`` beside the adapter.

The base engine is left as it was: the LoRA layers are removed (not merged) when
training ends. Load the student with ``load_engine("<base>+<adapter>.safetensors")``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, field_validator

from hoprank.errors import ConfigError, MissingExtra
from hoprank.llm import LLM, AdapterInfo, HFTokenizer, model_sha256, save_adapter
from hoprank.llm.base import chat_renderer
from hoprank.rankers.config import ComponentConfig
from hoprank.rankers.first import FIRST
from hoprank.train.data import Window

if TYPE_CHECKING:
    from hoprank.llm.runtime.worker import TorchWorker

_T = TypeVar("_T")

__all__ = ["FirstTrainConfig", "StepLog", "TrainResult", "log_path_for", "train_first"]

logger = logging.getLogger(__name__)


class FirstTrainConfig(ComponentConfig):
    """How a FIRST student trains (recorded in the adapter's metadata)."""

    window: int = Field(default=10, ge=2, le=26)
    windows_per_query: int = Field(default=1, ge=1)
    #: teacher candidates per query the windows are drawn from
    depth: int = Field(default=20, ge=2)
    epochs: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    loss: Literal["ranknet", "listnet"] = "ranknet"
    listnet_temperature: float = Field(default=1.0, gt=0)
    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    grad_accum: int = Field(default=1, ge=1)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    seed: int = 0
    #: FIRST's per-passage token cap (its ``max_passage_tokens``)
    max_passage_tokens: int = Field(default=100, ge=1)
    #: further FIRST parameters (``label_tokens``, ``prompt``, ``neutralize``...)
    first_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("targets", mode="before")
    @classmethod
    def _split_targets(cls, v: Any) -> Any:
        """``"q_proj,v_proj"`` (a CLI value) is ``("q_proj", "v_proj")``."""
        return tuple(t.strip() for t in v.split(",") if t.strip()) if isinstance(v, str) else v


@dataclass(frozen=True)
class StepLog:
    """One optimizer step: the mean loss of its windows (before the update)."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    windows: int
    prompt_tokens: int
    seconds: float
    #: CPU time of the whole process (all threads) during the step
    cpu_seconds: float


@dataclass
class TrainResult:
    """What :func:`train_first` did (an interrupted run raises instead)."""

    adapter: AdapterInfo
    steps: int
    losses: list[float]
    log_path: Path
    seconds: float
    windows: int


@dataclass
class _Encoded:
    ids: list[int]
    labels: list[int]
    teacher: list[float]
    ranks: list[int]


def log_path_for(adapter: str | Path) -> Path:
    """Where the per-step losses of ``adapter`` go: ``<stem>.train.jsonl`` beside it."""
    p = Path(adapter)
    return p.with_name(p.stem + ".train.jsonl")


def _encode(ranker: FIRST, windows: Sequence[Window]) -> list[_Encoded]:
    """Token ids of each window's FIRST prompt and of its label candidates."""
    engine = ranker.engine
    tok, renderer = engine.tokenizer, chat_renderer(engine)
    if not isinstance(tok, HFTokenizer) or renderer is None:
        raise ConfigError(f"training needs an engine with the model's own tokenizer; {engine.name} has none")
    out = []
    for w in windows:
        req = ranker.window_request(w.query, w.docs)
        ids = tok.encode(renderer.render(req.messages, req.prefill))
        out.append(_Encoded(ids, tok.single_token_ids(req.candidates), list(w.teacher), list(w.ranks)))
    return out


@dataclass
class _Trainer:
    """The model side of training; every method runs on the torch worker."""

    engine: Any
    config: FirstTrainConfig
    steps: int = 0
    peft_model: Any = None

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the engine's torch worker (the thread its model computes on)."""
        worker: TorchWorker = self.engine.worker
        return worker.call(fn, *args)

    optimizer: Any = None
    names: list[str] = field(default_factory=list)
    grad_flags: dict[str, bool] = field(default_factory=dict)
    base_sha256: str = ""
    forward_kwargs: dict[str, Any] = field(default_factory=dict)

    def setup(self) -> None:
        try:
            import torch
            from peft import LoraConfig, get_peft_model
            from peft.tuners.lora import LoraLayer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise MissingExtra("local", e.name) from e
        cfg, model = self.config, self.engine.model
        torch.manual_seed(cfg.seed)
        self.base_sha256 = model_sha256(self.engine.resolved)
        self.grad_flags = {n: p.requires_grad for n, p in model.named_parameters()}
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            self.forward_kwargs = {"logits_to_keep": 1}  # no logits for the prompt's other positions
        lora = LoraConfig(
            r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.targets)
        )
        try:
            self.peft_model = get_peft_model(model, lora)  # injects the LoRA layers into model, in place
        except ValueError as e:  # e.g. no module matches the targets
            raise ConfigError(f"LoRA on {self.engine.name}: {e}") from e
        model.train()
        self.names = [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def window(self, enc: _Encoded, share: float) -> float:
        """Forward and backward of one window (its loss scaled by ``share``); its loss."""
        import torch

        from hoprank.train.losses import listnet_loss, ranknet_loss

        dev = self.engine.device
        with torch.enable_grad():
            ids = torch.tensor([enc.ids], device=dev)
            out = self.engine.model(input_ids=ids, use_cache=False, **self.forward_kwargs)
            scores = out.logits[0, -1, enc.labels].float()
            teacher = torch.tensor(enc.teacher, device=dev, dtype=torch.float32)
            if self.config.loss == "listnet":
                loss = listnet_loss(scores, teacher, temperature=self.config.listnet_temperature)
            else:
                loss = ranknet_loss(scores, teacher, torch.tensor(enc.ranks, device=dev))
            scaled: Any = loss * share
            scaled.backward()
        return float(loss.detach())

    def step(self) -> None:
        import torch

        if self.config.max_grad_norm is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1

    def save(self, out: Path, extra: Mapping[str, Any]) -> AdapterInfo:
        model, cfg = self.engine.model, self.config
        tensors: dict[str, Any] = {}
        for name in self.names:
            layer = model.get_submodule(name)
            tensors[f"{name}.lora_A"] = layer.lora_A["default"].weight
            tensors[f"{name}.lora_B"] = layer.lora_B["default"].weight
        return save_adapter(
            out,
            tensors,
            base_model=self.engine.name,
            base_sha256=self.base_sha256,
            r=cfg.r,
            alpha=cfg.alpha,
            targets=cfg.targets,
            extra={**extra, "steps": self.steps},
        )

    def unload(self) -> None:
        model = self.engine.model
        if self.peft_model is not None:
            self.peft_model.unload()  # the base layers back in place, unchanged
            self.peft_model = None
        for n, p in model.named_parameters():
            p.requires_grad_(self.grad_flags.get(n, p.requires_grad))
        model.eval()


def _check_engine(engine: LLM) -> None:
    from hoprank.llm import TransformersEngine

    if not isinstance(engine, TransformersEngine):
        raise ConfigError(f"training needs an in-process transformers engine, got {type(engine).__name__}")
    if engine.adapter is not None:
        raise ConfigError(f"{engine.name} already has an adapter merged; train on the base model")


def _write(log: IO[str], record: Mapping[str, Any]) -> None:
    log.write(json.dumps(record, ensure_ascii=False) + "\n")
    log.flush()


def _epochs(
    trainer: _Trainer,
    encoded: Sequence[_Encoded],
    log: IO[str],
    on_step: Callable[[StepLog], None] | None,
    save: Callable[[int], AdapterInfo],
) -> tuple[list[float], AdapterInfo]:
    """The training loop (on the caller's thread; the model work on the worker)."""
    cfg = trainer.config
    n_steps = cfg.epochs * -(-len(encoded) // cfg.grad_accum)
    rng = random.Random(cfg.seed)
    losses: list[float] = []
    info: AdapterInfo | None = None
    for epoch in range(1, cfg.epochs + 1):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for start in range(0, len(order), cfg.grad_accum):
            chunk = [encoded[i] for i in order[start : start + cfg.grad_accum]]
            t0, c0 = time.perf_counter(), time.process_time()
            window_losses = [trainer.call(trainer.window, e, 1.0 / len(chunk)) for e in chunk]
            trainer.call(trainer.step)
            entry = StepLog(
                step=trainer.steps,
                total_steps=n_steps,
                epoch=epoch,
                loss=sum(window_losses) / len(window_losses),
                windows=len(chunk),
                prompt_tokens=sum(len(e.ids) for e in chunk),
                seconds=time.perf_counter() - t0,
                cpu_seconds=time.process_time() - c0,
            )
            losses.append(entry.loss)
            _write(log, {"event": "step", **dataclasses.asdict(entry)})
            if on_step is not None:
                on_step(entry)
        info = save(epoch)
    assert info is not None
    return losses, info


def train_first(
    engine: LLM,
    windows: Sequence[Window],
    *,
    out: str | Path,
    config: FirstTrainConfig | None = None,
    provenance: Mapping[str, Any] | None = None,
    on_step: Callable[[StepLog], None] | None = None,
) -> TrainResult:
    """Train a LoRA adapter so that FIRST on ``engine`` ranks ``windows`` as the teacher
    does, and save it to ``out`` (see the module docstring). ``provenance`` (dataset,
    teacher, queries...) is recorded in the adapter's metadata; ``on_step`` sees each
    step's :class:`StepLog`."""
    cfg = config or FirstTrainConfig()
    _check_engine(engine)
    if not windows:
        raise ConfigError("no training windows (no query has two passages the teacher scores apart)")
    path = Path(out).expanduser()
    ranker = FIRST(engine, window=cfg.window, max_passage_tokens=cfg.max_passage_tokens, **cfg.first_params)
    encoded = _encode(ranker, windows)
    meta: dict[str, Any] = {
        "trained": "first",
        "config": cfg.model_dump(mode="json"),
        "label_tokens": ranker.label_tokens,
        "prompt": ranker.prompt.ref,
        "windows": len(encoded),
        "queries": len({w.qid for w in windows}),
        **({"provenance": dict(provenance)} if provenance else {}),
    }
    trainer = _Trainer(engine, cfg)

    def save(epoch: int) -> AdapterInfo:
        extra = {**meta, "epochs_done": epoch, "complete": epoch == cfg.epochs}
        return trainer.call(trainer.save, path, extra)

    t_start = time.perf_counter()
    log_path = log_path_for(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        _write(log, {"event": "start", "adapter": str(path), **meta})
        try:
            trainer.call(trainer.setup)
            losses, info = _epochs(trainer, encoded, log, on_step, save)
        except KeyboardInterrupt:
            if trainer.steps:
                info = trainer.call(trainer.save, path, {**meta, "complete": False})
                _write(log, {"event": "interrupted", "steps": trainer.steps, "sha256": info.sha256})
                logger.warning("interrupted: saved the adapter after %d steps to %s", trainer.steps, path)
            raise
        finally:
            trainer.call(trainer.unload)
        seconds = time.perf_counter() - t_start
        _write(log, {"event": "end", "steps": trainer.steps, "seconds": seconds, "sha256": info.sha256})
    return TrainResult(info, trainer.steps, losses, log_path, seconds, len(encoded))
