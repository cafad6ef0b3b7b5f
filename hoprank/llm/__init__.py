"""hoprank.llm: model engines behind one ``LLM`` protocol.

The protocol and value types are imported eagerly (they are light). Engines load
lazily on first attribute access, so ``import hoprank.llm`` never imports torch,
transformers, openai or vllm:

- :class:`TransformersEngine` (in-process, CPU/CUDA; logits and attention),
- :class:`OpenAIEngine` (any OpenAI-compatible endpoint),
- :class:`VLLMEngine` (in-process vLLM, GPU),
- :class:`ScriptedEngine` (a fake for unit tests).

:func:`load_engine` builds one from a short spec string.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hoprank.errors import ConfigError, InvalidInput
from hoprank.llm.base import (
    LLM,
    AttentionEngine,
    AttentionRows,
    Capability,
    ChatRenderer,
    Completion,
    ExactTokenizer,
    LogprobRequest,
    Message,
    Tokenizer,
    TokenLogprobs,
)

if TYPE_CHECKING:
    from hoprank.llm.batching import BatchingEngine, MicroBatcher
    from hoprank.llm.hf_tokenizer import HFTokenizer
    from hoprank.llm.lora import AdapterInfo, model_sha256, read_adapter_info, save_adapter, split_adapter
    from hoprank.llm.packs import DEFAULT_MODEL, PackInfo, ResolvedModel, gguf_path, list_packs, pull, resolve
    from hoprank.llm.scripted import ScriptedEngine
    from hoprank.llm.transformers_engine import TransformersEngine

__all__ = [
    "DEFAULT_MODEL",
    "LLM",
    "AdapterInfo",
    "AttentionEngine",
    "AttentionRows",
    "BatchingEngine",
    "Capability",
    "ChatRenderer",
    "Completion",
    "ExactTokenizer",
    "HFTokenizer",
    "LogprobRequest",
    "Message",
    "MicroBatcher",
    "OpenAIEngine",
    "PackInfo",
    "ResolvedModel",
    "ScriptedEngine",
    "TokenLogprobs",
    "Tokenizer",
    "TransformersEngine",
    "VLLMEngine",
    "gguf_path",
    "list_packs",
    "load_engine",
    "model_sha256",
    "pull",
    "read_adapter_info",
    "resolve",
    "save_adapter",
    "split_adapter",
]

_LAZY: dict[str, str] = {
    "TransformersEngine": "hoprank.llm.transformers_engine",
    "OpenAIEngine": "hoprank.llm.openai_engine",
    "VLLMEngine": "hoprank.llm.vllm_engine",
    "ScriptedEngine": "hoprank.llm.scripted",
    "BatchingEngine": "hoprank.llm.batching",
    "MicroBatcher": "hoprank.llm.batching",
    "HFTokenizer": "hoprank.llm.hf_tokenizer",
    "DEFAULT_MODEL": "hoprank.llm.packs",
    "PackInfo": "hoprank.llm.packs",
    "ResolvedModel": "hoprank.llm.packs",
    "gguf_path": "hoprank.llm.packs",
    "list_packs": "hoprank.llm.packs",
    "pull": "hoprank.llm.packs",
    "resolve": "hoprank.llm.packs",
    "AdapterInfo": "hoprank.llm.lora",
    "model_sha256": "hoprank.llm.lora",
    "read_adapter_info": "hoprank.llm.lora",
    "save_adapter": "hoprank.llm.lora",
    "split_adapter": "hoprank.llm.lora",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hoprank.llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_engine(spec: str, **kwargs: Any) -> LLM:
    """Build an engine from a spec string.

    - ``"qwen2.5-coder-1.5b"`` (a pack name), a transformers folder or a ``.gguf`` path,
      optionally prefixed ``"transformers:"`` → :class:`TransformersEngine`;
    - ``"openai:<model>"`` → ``OpenAIEngine(model=<model>, **kwargs)`` (``base_url``,
      ``api_key``... go in ``kwargs``);
    - ``"vllm:<pack-or-path>"`` → ``VLLMEngine(model=<pack-or-path>, **kwargs)``;
    - ``"<local model>+<adapter>.safetensors"`` → the transformers engine with that LoRA
      adapter merged (``adapter=`` keyword; :mod:`hoprank.llm.lora`).
    """
    from hoprank.llm.lora import split_adapter
    from hoprank.llm.spec import split_spec

    spec = spec.strip()
    backend, rest = split_spec(spec)
    rest, adapter = split_adapter(rest)
    if not rest:
        raise InvalidInput(f"engine spec {spec!r} names no model")
    if adapter is not None:
        if backend != "transformers":
            raise ConfigError(f"engine spec {spec!r}: LoRA adapters apply to local transformers models only")
        kwargs = {**kwargs, "adapter": adapter}
    if backend == "openai":
        engine: LLM = importlib.import_module("hoprank.llm.openai_engine").OpenAIEngine(model=rest, **kwargs)
    elif backend == "vllm":
        engine = importlib.import_module("hoprank.llm.vllm_engine").VLLMEngine(model=rest, **kwargs)
    else:
        from hoprank.llm.transformers_engine import TransformersEngine

        engine = TransformersEngine(rest, **kwargs)
    return engine
