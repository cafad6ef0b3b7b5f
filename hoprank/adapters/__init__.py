"""Adapters that plug hoprank rankers into other frameworks (``pip install 'hoprank[adapters]'``).

- :class:`HoprankDocumentCompressor` (LangChain ``BaseDocumentCompressor``), in
  :mod:`hoprank.adapters.langchain`;
- :class:`HoprankNodePostprocessor` (LlamaIndex ``BaseNodePostprocessor``), in
  :mod:`hoprank.adapters.llamaindex`;
- :func:`relevance_scores`, the score convention both use (and the HTTP service).

The framework modules import their framework on first access only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hoprank.adapters.scoring import relevance_scores

if TYPE_CHECKING:
    from hoprank.adapters.langchain import HoprankDocumentCompressor
    from hoprank.adapters.llamaindex import HoprankNodePostprocessor

__all__ = ["HoprankDocumentCompressor", "HoprankNodePostprocessor", "relevance_scores"]

_LAZY = {
    "HoprankDocumentCompressor": "hoprank.adapters.langchain",
    "HoprankNodePostprocessor": "hoprank.adapters.llamaindex",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hoprank.adapters' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
