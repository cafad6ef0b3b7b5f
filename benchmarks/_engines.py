"""Engine choice shared by the benchmark scripts.

Engines load through :class:`hoprank.llm.spec.EngineSpec`, like the CLI's and the
service's. ``--engine transformers`` (default) loads the model in process (``TransformersEngine``);
``--engine openai`` talks to a running OpenAI-compatible server (``--base-url``,
``--server``); ``--engine llamacpp`` starts a real llama.cpp server on 127.0.0.1 for the
pack's verified GGUF (``--model`` must be a pack name) and talks to it through
``OpenAIEngine``, with the pack's own HF tokenizer so token budgets and FIRST's label
tokens are the served model's.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

ENGINES = ("transformers", "openai", "llamacpp")


def add_engine_args(ap: argparse.ArgumentParser, *, default_model: str = "qwen2.5-coder-1.5b") -> None:
    """The engine options every benchmark understands."""
    ap.add_argument("--model", default=default_model, help="pack name or folder (openai: the served model)")
    ap.add_argument("--engine", choices=ENGINES, default="transformers")
    ap.add_argument("--base-url", default=None, help="--engine openai: the server's /v1 URL")
    ap.add_argument("--server", choices=["openai", "vllm", "llamacpp"], default="openai")
    ap.add_argument("--attn", default=None, help="attn_implementation for transformers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=8192, help="--engine llamacpp: context window")
    ap.add_argument("--timeout", type=float, default=600.0, help="OpenAI-path request timeout (s)")


def _hf_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    from hoprank.llm.models.packs import resolve
    from hoprank.llm.tokenizers.hf_tokenizer import HFTokenizer

    folder = resolve(model).path
    return HFTokenizer(AutoTokenizer.from_pretrained(str(folder), local_files_only=True), name=model)


@contextlib.contextmanager
def open_engine(args: argparse.Namespace) -> Iterator[Any]:
    """The engine ``args`` ask for; a llama.cpp server started here is stopped on exit."""
    from hoprank.llm.spec import OPENAI_PREFIX, EngineSpec

    if args.engine == "transformers":
        attn = {"attn_implementation": args.attn} if args.attn else {}
        yield EngineSpec(f"transformers:{args.model}", threads=args.threads, options=attn).load()
        return
    if args.engine == "openai":
        options = {"server": args.server, "timeout": args.timeout}
        yield EngineSpec(OPENAI_PREFIX + args.model, base_url=args.base_url, options=options).load()
        return
    from hoprank.llm.engines.openai_engine import OpenAIEngine
    from hoprank.llm.models.llamacpp_server import LlamaCppServer

    tokenizer = _hf_tokenizer(args.model)
    with LlamaCppServer.from_pack(args.model, threads=args.threads, n_ctx=args.n_ctx) as server:
        yield OpenAIEngine(
            model=args.model,
            base_url=server.base_url,
            api_key="none",
            server="llamacpp",
            tokenizer=tokenizer,
            context_window=args.n_ctx,
            timeout=args.timeout,
            max_concurrency=1,
            name=f"llamacpp:{args.model}",
        )
