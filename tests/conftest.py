"""Shared test fixtures: where the real datasets live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HOPRANK_SHARED", ROOT.parent / "shared"))
DATASETS = SHARED / "datasets"


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    assert DATASETS.is_dir(), f"shared datasets not found at {DATASETS} (set HOPRANK_SHARED)"
    return DATASETS


# --- real local engines (session-scoped: each model loads once per test run) ---------


@pytest.fixture(scope="session")
def smollm2_engine() -> Any:
    """SmolLM2-135M-Instruct on transformers (bf16 where the CPU has it): for plumbing."""
    from hoprank.llm.engines.transformers_engine import TransformersEngine

    return TransformersEngine("smollm2-135m", threads=2)


@pytest.fixture(scope="session")
def qwen05_engine() -> Any:
    """Qwen2.5-Coder-0.5B-Instruct on transformers: where behaviour matters."""
    from hoprank.llm.engines.transformers_engine import TransformersEngine

    return TransformersEngine("qwen2.5-coder-0.5b", threads=2)
