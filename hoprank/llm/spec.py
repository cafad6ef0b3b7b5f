"""Engine specs: one place that turns command-line or settings options into an engine.

A spec names the model the way :func:`hoprank.llm.load_engine` reads it: a model-pack
name (``qwen2.5-coder-1.5b``), a transformers folder, a ``.gguf`` file, ``vllm:<model>``
or ``openai:<model>``. :meth:`EngineSpec.resolve` applies the rules every front end
shares (the CLI commands, the HTTP service, the benchmark scripts):

- no model: ``default_model`` (the CLI's default pack; ``None`` for "no engine");
- a ``base_url`` implies an OpenAI-compatible endpoint: ``m`` becomes ``openai:m``;
- an OpenAI-compatible engine takes its API key from ``api_key`` or the environment
  variable ``api_key_env`` (read only for such engines; a blank value counts as unset);
- ``threads`` is for local engines only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hoprank.errors import ConfigError
from hoprank.llm.base import LLM

__all__ = ["BACKENDS", "DEFAULT_API_KEY_ENV", "OPENAI_PREFIX", "EngineSpec", "split_spec"]

OPENAI_PREFIX = "openai:"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
BACKENDS = ("openai", "vllm", "transformers")


def split_spec(spec: str) -> tuple[str, str]:
    """``(backend, model)`` of a spec: ``openai:m``, ``vllm:m``, ``transformers:m``, or a bare
    pack name / folder / ``.gguf`` path (transformers)."""
    spec = spec.strip()
    backend, sep, rest = spec.partition(":")
    if not sep or backend not in BACKENDS:
        return "transformers", spec
    return backend, rest


@dataclass(frozen=True)
class EngineSpec:
    """What to load: ``model`` (a :func:`~hoprank.llm.load_engine` spec, or ``None`` for
    no engine) and the keyword arguments the engine takes. ``api_key`` never shows in
    ``repr``."""

    model: str | None
    base_url: str | list[str] | None = None
    api_key: str | None = field(default=None, repr=False)
    threads: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def resolve(
        cls,
        model: str | None,
        *,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        threads: int | None = None,
        options: Mapping[str, Any] | None = None,
        default_model: str | None = None,
    ) -> EngineSpec:
        """The spec that ``--model``, ``--base-url``, ``--api-key-env`` and ``--threads``
        (or their settings) describe, by the rules in the module docstring."""
        spec = model or default_model
        urls: str | list[str] | None = None
        if base_url:
            urls = base_url if isinstance(base_url, str) else list(base_url)
            if len(urls) == 1 and not isinstance(urls, str):
                urls = urls[0]
            if spec and not spec.startswith(OPENAI_PREFIX):
                spec = OPENAI_PREFIX + spec
        remote = bool(spec and spec.startswith(OPENAI_PREFIX))
        key = api_key
        if remote and key is None and api_key_env:
            key = os.environ.get(api_key_env, "").strip() or None
        return cls(
            model=spec,
            base_url=urls,
            api_key=key if remote else None,
            threads=threads if threads and spec and not remote else None,
            options=dict(options or {}),
        )

    @property
    def is_remote(self) -> bool:
        """True for an OpenAI-compatible endpoint (``openai:<model>``)."""
        return bool(self.model and self.model.startswith(OPENAI_PREFIX))

    def engine_kwargs(self, *, secrets: bool = True) -> dict[str, Any]:
        """The keyword arguments for :func:`~hoprank.llm.load_engine`: ``options`` first,
        then ``base_url``, ``api_key`` (unless ``secrets=False``) and ``threads`` where set."""
        kwargs: dict[str, Any] = dict(self.options)
        if self.base_url:
            kwargs["base_url"] = self.base_url
        if secrets and self.api_key:
            kwargs["api_key"] = self.api_key
        if self.threads:
            kwargs["threads"] = self.threads
        return kwargs

    def identity(self) -> dict[str, Any]:
        """Who the engine is, without loading it: backend and model and, for a local model,
        the folder and GGUF sha256 its ``describe()`` reports too (a pack is pulled if it
        is not yet, never loaded). For manifests of runs whose engines live elsewhere."""
        if not self.model:
            raise ConfigError("no model configured")
        from hoprank.llm.models.lora import read_adapter_info, split_adapter

        backend, model = split_spec(self.model)
        model, adapter = split_adapter(model)
        if backend != "transformers":
            return {"engine": backend, "model": model}
        from hoprank.llm.models.packs import resolve

        r = resolve(model)
        out: dict[str, Any] = {
            "engine": "transformers",
            "model": r.name,
            "path": str(r.path),
            "source": r.source,
            "gguf_sha256": r.gguf_sha256,
        }
        adapter = adapter or self.options.get("adapter")
        if adapter:  # what the loaded engine's describe() says of it (checked when it loads)
            info = read_adapter_info(adapter)
            out.update(model=info.engine_name(r.name), adapter=info.describe())
        return out

    def load(self) -> LLM:
        """Build the engine (blocking: a local model loads here)."""
        from hoprank.llm import load_engine

        if not self.model:
            raise ConfigError("no model configured")
        return load_engine(self.model, **self.engine_kwargs())
