"""Pytest fixtures around the real servers. Import them into a test module::

from servers.fixtures import fault, llamacpp_server  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hoprank.llm.models.llamacpp_server import LlamaCppServer

from .fault_server import FaultServer


@pytest.fixture
def fault() -> Iterator[FaultServer]:
    """A fresh scripted fault server on 127.0.0.1 (see :mod:`servers.fault_server`)."""
    with FaultServer() as fs:
        yield fs


@pytest.fixture(scope="session")
def llamacpp_server() -> Iterator[LlamaCppServer]:
    """A real llama.cpp server on 127.0.0.1 serving SmolLM2-135M (two request slots)."""
    with LlamaCppServer.from_pack("smollm2-135m", n_ctx=4096, n_parallel=2, threads=2) as srv:
        yield srv
