"""hoprank: agentic multi-hop retrieval with LLM listwise reranking.

``import hoprank`` is light: it never imports torch, transformers or vllm. Heavy engines
load lazily from :mod:`hoprank.llm` when first used.
"""

from hoprank._version import __version__
from hoprank.errors import HoprankError
from hoprank.prompts import PromptTemplate, list_prompts, load_prompt
from hoprank.types import Document, Ranking, Step, Usage

__all__ = [
    "Document",
    "HoprankError",
    "PromptTemplate",
    "Ranking",
    "Step",
    "Usage",
    "__version__",
    "list_prompts",
    "load_prompt",
]
