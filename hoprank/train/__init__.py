"""hoprank.train: distil a teacher ranking into a local model (LoRA adapters).

``hoprank train first`` (:func:`~hoprank.train.first.train_first`) trains a FIRST
student: a LoRA adapter that makes the label-token logits of FIRST's own prompt order a
window as the teacher does (a ranker's run folder, a TREC run, or qrels). The adapter is
one ``.safetensors`` file bound to its base model's sha256 (:mod:`hoprank.llm.models.lora`);
``load_engine("<base>+<adapter>.safetensors")`` merges it.

Importing this package is light: torch and peft load when training starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hoprank.train.data import TeacherList, Window, make_windows, qrels_teacher, run_teacher

if TYPE_CHECKING:
    from hoprank.train.first import FirstTrainConfig, StepLog, TrainResult, log_path_for, train_first

__all__ = [
    "FirstTrainConfig",
    "StepLog",
    "TeacherList",
    "TrainResult",
    "Window",
    "log_path_for",
    "make_windows",
    "qrels_teacher",
    "run_teacher",
    "train_first",
]

_LAZY = {
    name: "hoprank.train.first"
    for name in ("FirstTrainConfig", "StepLog", "TrainResult", "log_path_for", "train_first")
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hoprank.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
