"""hoprank.llm: model engines behind one ``LLM`` protocol.

The protocol and value types are imported eagerly (they are light). Engines load
lazily on first attribute access, so ``import hoprank.llm`` never imports torch,
transformers, openai or vllm:

- :class:`TransformersEngine` (in-process, CPU/CUDA; logits and attention),
- :class:`OpenAIEngine` (any OpenAI-compatible endpoint),
- :class:`VLLMEngine` (in-process vLLM, GPU),
- :class:`ScriptedEngine` (a fake for unit tests);

and the wrappers :class:`BatchingEngine` (micro-batching) and :class:`CachedEngine` (a
disk cache of calls).

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
    from hoprank.llm.engines.batching import BatchingEngine, MicroBatcher
    from hoprank.llm.engines.cached import CachedEngine
    from hoprank.llm.engines.scripted import ScriptedEngine
    from hoprank.llm.engines.transformers_engine import TransformersEngine
    from hoprank.llm.models.lora import (
        AdapterInfo,
        model_sha256,
        read_adapter_info,
        save_adapter,
        split_adapter,
    )
    from hoprank.llm.models.packs import (
        DEFAULT_MODEL,
        PackInfo,
        ResolvedModel,
        gguf_path,
        list_packs,
        pull,
        resolve,
    )
    from hoprank.llm.tokenizers.hf_tokenizer import HFTokenizer

__all__ = [
    "DEFAULT_MODEL",
    "LLM",
    "AdapterInfo",
    "AttentionEngine",
    "AttentionRows",
    "BatchingEngine",
    "CachedEngine",
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
    "TransformersEngine": "hoprank.llm.engines.transformers_engine",
    "OpenAIEngine": "hoprank.llm.engines.openai_engine",
    "VLLMEngine": "hoprank.llm.engines.vllm_engine",
    "ScriptedEngine": "hoprank.llm.engines.scripted",
    "BatchingEngine": "hoprank.llm.engines.batching",
    "MicroBatcher": "hoprank.llm.engines.batching",
    "CachedEngine": "hoprank.llm.engines.cached",
    "HFTokenizer": "hoprank.llm.tokenizers.hf_tokenizer",
    "DEFAULT_MODEL": "hoprank.llm.models.packs",
    "PackInfo": "hoprank.llm.models.packs",
    "ResolvedModel": "hoprank.llm.models.packs",
    "gguf_path": "hoprank.llm.models.packs",
    "list_packs": "hoprank.llm.models.packs",
    "pull": "hoprank.llm.models.packs",
    "resolve": "hoprank.llm.models.packs",
    "AdapterInfo": "hoprank.llm.models.lora",
    "model_sha256": "hoprank.llm.models.lora",
    "read_adapter_info": "hoprank.llm.models.lora",
    "save_adapter": "hoprank.llm.models.lora",
    "split_adapter": "hoprank.llm.models.lora",
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
      adapter merged (``adapter=`` keyword; :mod:`hoprank.llm.models.lora`).
    """
    from hoprank.llm.models.lora import split_adapter
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
        engine: LLM = importlib.import_module("hoprank.llm.engines.openai_engine").OpenAIEngine(
            model=rest, **kwargs
        )
    elif backend == "vllm":
        engine = importlib.import_module("hoprank.llm.engines.vllm_engine").VLLMEngine(model=rest, **kwargs)
    else:
        from hoprank.llm.engines.transformers_engine import TransformersEngine

        engine = TransformersEngine(rest, **kwargs)
    return engine
