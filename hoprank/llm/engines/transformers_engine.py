"""An in-process engine on Hugging Face transformers (CPU or CUDA).

Gives everything the rankers need: generation, next-token log-probabilities from one
forward pass (FIRST, pointwise yes/no), prefilled assistant turns, and attention rows
(ICR, via :mod:`hoprank.llm.runtime.attention`). Models come from offline packs, transformers
folders or GGUF files (see :mod:`hoprank.llm.models.packs`).

All model work (loading included) runs on one torch worker thread (a
:class:`~hoprank.llm.runtime.worker.TorchWorker`: the engine's ``worker=``, else the
process's :func:`~hoprank.llm.runtime.worker.default_worker` that every engine given
none shares) under one lock per engine and inside ``torch.inference_mode()``. One thread,
because torch's CPU thread pool belongs to the calling thread: forwards issued from
several threads (``asyncio.to_thread`` picks any pool thread) start several OpenMP teams
that spin against each other and made forwards 5-10x slower on a 2-core machine. The
lock is a ``threading.RLock`` taken in the worker thread, so the engine can be shared by
several event loops (the sync facade runs each call on its own loop).
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from typing_extensions import Unpack

from hoprank.errors import InvalidInput, MissingExtra
from hoprank.llm.base import (
    AttentionOptions,
    AttentionRows,
    Capability,
    Completion,
    GenerateOptions,
    LogprobRequest,
    Message,
    TokenLogprobs,
    attention_options,
)
from hoprank.llm.engines._common import HF_CAPABILITIES, EngineConfig, LocalEngine, generate_request
from hoprank.llm.models.packs import DEFAULT_MODEL, resolve
from hoprank.llm.runtime._buckets import LengthBuckets
from hoprank.llm.runtime._buckets import length_buckets as _length_buckets
from hoprank.llm.runtime._device import choose_device, choose_dtype
from hoprank.llm.runtime._device import sdpa_backends as _sdpa_backends
from hoprank.llm.runtime.prefix_cache import PrefixCache
from hoprank.llm.runtime.worker import TorchWorker, cancel_stopping_criteria, check_cancelled, default_worker
from hoprank.types import Usage

if TYPE_CHECKING:
    import torch

__all__ = ["TransformersEngine", "TransformersEngineConfig"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_CONTEXT = 32768
_RAW_TOP = 10
_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>")


class TransformersEngineConfig(EngineConfig):
    """The options of :class:`TransformersEngine` (all but the model), validated once.

    ``dtype`` (``"auto"``, ``"bf16"``, ``"fp32"``..., or a ``torch.dtype``); ``device``
    (``"auto"``, ``"cpu"``, ``"cuda"``...); ``attn_implementation``; ``max_batch_size``
    prompts per logit forward; ``threads`` (torch's CPU threads, process-wide);
    ``max_context`` tokens; ``fp32_head``; ``sdpa_backends``; ``length_buckets``; ``adapter``;
    ``prefix_cache`` (see :class:`TransformersEngine`).
    """

    engine: ClassVar[str] = "TransformersEngine"

    dtype: Any = "auto"
    device: str = "auto"
    attn_implementation: str = "sdpa"
    max_batch_size: int = 16
    threads: int | None = None
    max_context: int = _MAX_CONTEXT
    fp32_head: bool = True
    sdpa_backends: str | Sequence[str] | None = None
    length_buckets: str | Sequence[int] | None = None
    adapter: str | os.PathLike[str] | None = None
    prefix_cache: int = 8

    def check(self) -> None:
        if self.max_batch_size < 1:
            raise InvalidInput("max_batch_size must be >= 1")
        if self.prefix_cache < 0:
            raise InvalidInput("prefix_cache must be >= 0 (0 turns it off)")


class TransformersEngine(LocalEngine):
    """A local causal LM loaded with transformers.

    ``model`` is a pack name (default ``qwen2.5-coder-1.5b``), a transformers folder or a
    ``.gguf`` file. ``dtype="auto"`` picks bf16 on CUDA or on a CPU with native bf16, else
    fp32. ``threads`` sets torch's CPU thread count (process-wide). With ``fp32_head`` (the
    default) next-token logits come from the LM head recomputed in fp32 on the last hidden
    state: bf16 logits are rounded to 0.125 steps, which ties close labels.

    ``sdpa_backends`` (e.g. ``["flash", "efficient", "math"]``) restricts and orders the
    kernels torch's scaled-dot-product attention may pick, for every model call of the
    engine: leaving ``"cudnn"`` out avoids cuDNN's per-shape host setup, which dominated
    an H200 profile (benchmarks/README.md "GPU"). ``None`` (default) leaves torch's choice.

    ``length_buckets`` (``"pow2"`` or a list such as ``[512, 1024, 2048]``) pads every
    next-token logit forward (FIRST, setwise, pointwise, :meth:`forward_last_logits`) to
    the next bucket length, so that a new query meets a shape already planned; the padding
    leaves the logits unchanged (:mod:`hoprank.llm.runtime._buckets`) and costs its arithmetic
    (up to 2x tokens with ``"pow2"``). Not yet timed on a GPU. ``None`` (default): no padding.

    ``adapter`` (a ``.safetensors`` file of ``hoprank train first``; also
    ``load_engine("<model>+<file>.safetensors")``) merges a LoRA adapter into the weights
    at load: :mod:`hoprank.llm.models.lora` (a base of another sha256 raises
    :class:`~hoprank.errors.AdapterMismatch`; ``name`` and ``describe()`` then name it).

    ``prefix_cache`` (default 8, one question of the largest QA preset; 0: off) keeps the KV
    caches of that many recent generations: :meth:`generate` prefills only what a prompt
    does not share with one of them (``usage.cached_tokens``; ~80 MB per 1,400 tokens of
    the 1.5B in fp32; :mod:`hoprank.llm.runtime.prefix_cache`).

    Candidates for :meth:`next_token_logprobs` must each encode to exactly one token on
    their own (``"A"``, ``" Yes"``...); anything else raises :class:`InvalidInput` naming
    the candidate, because a multi-token string has no single next-token probability.

    Options come as keywords (the fields of :class:`TransformersEngineConfig`) or as a
    ready ``config``. ``worker`` is the :class:`~hoprank.llm.runtime.worker.TorchWorker`
    the engine runs its model work on (default: the shared
    :func:`~hoprank.llm.runtime.worker.default_worker`).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        config: TransformersEngineConfig | None = None,
        worker: TorchWorker | None = None,
        **options: Any,
    ) -> None:
        cfg = TransformersEngineConfig.build(config, options)
        self.config = cfg
        self.worker: TorchWorker = worker if worker is not None else default_worker()
        self.sdpa_backends: tuple[Any, ...] | None = _sdpa_backends(cfg.sdpa_backends)  # a typo fails
        self.length_buckets: LengthBuckets | None = _length_buckets(cfg.length_buckets)  # before loading
        if cfg.adapter is not None:  # and so does an adapter made for another base
            from hoprank.llm.models.lora import check_adapter, model_sha256

            check_adapter(cfg.adapter, model_sha256(resolve(model)))
        #: the merged LoRA adapter's identity (``AdapterInfo.describe()``), or None
        self.adapter: dict[str, Any] | None = None
        self.worker.call(self._load, model, cfg)
        if cfg.adapter is not None:
            self.worker.call(self._merge_adapter, cfg.adapter)

    def _load(self, model: str, cfg: TransformersEngineConfig) -> None:
        try:
            import torch
            import transformers
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise MissingExtra("local", e.name) from e
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        t0 = time.perf_counter()
        self.resolved = resolve(model)
        self.name: str = self.resolved.name
        self.device: str = choose_device(cfg.device)
        self.dtype: torch.dtype = choose_dtype(cfg.dtype, self.device)
        self.attn_implementation = cfg.attn_implementation
        self.max_batch_size = cfg.max_batch_size
        self.prefix_cache = PrefixCache(cfg.prefix_cache)
        self._load_weights(str(self.resolved.path))
        self.capabilities: frozenset[Capability] = HF_CAPABILITIES | {Capability.ATTENTION}
        n_pos = int(getattr(self.model.config, "max_position_embeddings", 0) or cfg.max_context)
        self.context_window: int = min(n_pos, cfg.max_context)
        self._transformers_version: str = transformers.__version__
        self._torch_version: str = torch.__version__
        self._setup_decoding(cfg.fp32_head)
        logger.info(
            "loaded %s (%s, %s, %s) in %.1f s",
            self.name,
            self.resolved.path,
            self.dtype,
            self.device,
            time.perf_counter() - t0,
        )

    def _load_weights(self, path: str) -> None:
        """The HF tokenizer and the model from the local folder ``path``, on the device, in eval mode."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._use_hf_tokenizer(AutoTokenizer.from_pretrained(path, local_files_only=True))
        self.model: Any = cast(
            Any,
            AutoModelForCausalLM.from_pretrained(
                path, dtype=self.dtype, attn_implementation=self.attn_implementation, local_files_only=True
            ),
        )
        self.model.to(self.device)
        self.model.eval()

    def _merge_adapter(self, adapter: str | os.PathLike[str]) -> None:
        """Merge a LoRA adapter into the weights (:mod:`hoprank.llm.models.lora`) and name it."""
        from hoprank.llm.models.lora import merge_adapter, model_sha256

        info = merge_adapter(self.model, adapter, base_sha256=model_sha256(self.resolved))
        self.adapter, self.name = info.describe(), info.engine_name(self.name)

    def _setup_decoding(self, fp32_head: bool) -> None:
        """The output head (float32 where asked), end-of-turn and pad ids, the call lock."""
        import torch

        params = inspect.signature(self.model.forward).parameters
        self._logits_to_keep = "logits_to_keep" in params
        # transformers >= 5.2x names the KV cache argument ``cache`` (``past_key_values`` goes in 6)
        self._cache_keyword = "cache" if "cache" in params else "past_key_values"
        self._decoder: Any = None
        if fp32_head and self.dtype != torch.float32:
            self._decoder = self._setup_fp32_head()
        self._end_ids = self._find_end_ids()
        pad = self.hf_tokenizer.pad_token_id
        self._pad_id: int = int(pad) if pad is not None else self._end_ids[0]
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ plumbing

    def _find_end_ids(self) -> list[int]:
        ids: list[int] = []
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for i in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
            if i is not None:
                ids.append(int(i))
        if self.hf_tokenizer.eos_token_id is not None:
            ids.append(int(self.hf_tokenizer.eos_token_id))
        vocab = self.hf_tokenizer.get_vocab()
        ids.extend(int(vocab[t]) for t in _END_TOKENS if t in vocab)
        return list(dict.fromkeys(ids)) or [0]

    def _locked(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import torch

        with self._lock, torch.inference_mode():
            if self.sdpa_backends is None:
                return fn(*args, **kwargs)
            from torch.nn.attention import sdpa_kernel

            with sdpa_kernel(list(self.sdpa_backends), set_priority=True):
                return fn(*args, **kwargs)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # cancellable: a job not started is dropped, a running one stops at its next
        # forward pass or generated token (hoprank.llm.runtime.worker)
        return await self.worker.run(functools.partial(self._locked, fn, *args, **kwargs))

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "transformers",
            "model": self.name,
            "path": str(self.resolved.path),
            "source": self.resolved.source,
            "gguf_sha256": self.resolved.gguf_sha256,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "attn_implementation": self.attn_implementation,
            "sdpa_backends": [b.name for b in self.sdpa_backends] if self.sdpa_backends else None,
            "length_buckets": self.length_buckets.describe() if self.length_buckets else None,
            "logits": "fp32 head" if self._decoder is not None else str(self.dtype).removeprefix("torch."),
            "context_window": self.context_window,
            "transformers_version": self._transformers_version,
            "torch_version": self._torch_version,
            **({"adapter": self.adapter} if self.adapter is not None else {}),
        }

    # ------------------------------------------------------------------ forward

    def forward_last_logits(self, input_ids: Any, attention_mask: Any | None = None) -> torch.Tensor:
        """Last-position logits (fp32, shape ``[batch, vocab]``) for left-padded input.

        Runs on the torch worker thread under the engine lock; position ids follow the
        attention mask, so left padding gives the same result as an unpadded run.
        """
        out: torch.Tensor = self.worker.call(
            self._locked, self._forward_last_logits, input_ids, attention_mask
        )
        return out

    def _forward_last_logits(self, input_ids: Any, attention_mask: Any | None) -> torch.Tensor:
        import torch

        input_ids = torch.as_tensor(input_ids, device=self.device)
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = torch.as_tensor(attention_mask, device=self.device)
        pad = self._bucket(input_ids.shape[-1]) - input_ids.shape[-1]
        if pad:  # left padding, masked: the real tokens keep their positions
            input_ids = torch.nn.functional.pad(input_ids, (pad, 0), value=self._pad_id)
            attention_mask = torch.nn.functional.pad(attention_mask, (pad, 0), value=0)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._logits_to_keep else {}
        if self._decoder is not None:
            hidden = self._decoder(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state[:, -1, :]
            return self._head_fp32(hidden)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            **kwargs,
        )
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits

    def _forward_rows(self, rows: list[list[int]]) -> torch.Tensor:
        """Last-token logits (fp32, ``[len(rows), vocab]``) of rows of any lengths: one
        right-padded forward without a padding mask (:func:`~hoprank.llm.runtime.forward.last_token_outputs`)."""
        import torch

        from hoprank.llm.runtime.forward import last_token_outputs

        kw: dict[str, Any] = {"pad_id": self._pad_id, "device": self.device}
        kw["width"] = self._bucket(max((len(r) for r in rows), default=0))
        if self._decoder is not None:
            return self._head_fp32(last_token_outputs(self._decoder, rows, hidden=True, **kw))
        if self._logits_to_keep:
            return last_token_outputs(self.model, rows, hidden=False, **kw).float()
        return torch.cat([self._forward_last_logits(torch.tensor([r]), None) for r in rows])

    def _bucket(self, n: int) -> int:
        """The length a logit forward of ``n`` tokens is padded to (``length_buckets``)."""
        return n if self.length_buckets is None else self.length_buckets.length(n, self.context_window)

    def _head_fp32(self, hidden: torch.Tensor) -> torch.Tensor:
        from hoprank.llm.runtime._fp32_head import head_fp32

        out: torch.Tensor = head_fp32(self.model, hidden)
        return out

    def _setup_fp32_head(self) -> Any:
        from hoprank.llm.runtime._fp32_head import fp32_head_decoder

        probe = self.tokenizer.encode("The answer to the question is") or [0]
        return fp32_head_decoder(self.model, probe, self.device, self.name)

    def _logprobs_sync(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        import torch

        prepared = []
        for r in requests:
            prompt = self._prompt_ids(r.messages, r.prefill, 1)
            prepared.append((prompt, self._candidate_ids(r.candidates)))
        results: list[TokenLogprobs | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: len(prepared[i][0]))
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            check_cancelled()
            t0 = time.perf_counter()
            logits = self._forward_rows([prepared[i][0] for i in chunk])
            logprobs = torch.log_softmax(logits, dim=-1).cpu()
            seconds = (time.perf_counter() - t0) / len(chunk)
            for row, i in enumerate(chunk):
                lp = logprobs[row]
                req = requests[i]
                scores = {c: float(lp[t]) for c, t in zip(req.candidates, prepared[i][1], strict=True)}
                top = torch.topk(lp, _RAW_TOP)
                raw: dict[str, float] = {}
                for v, t in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                    raw.setdefault(self.tokenizer.decode([int(t)]), float(v))
                usage = Usage(prompt_tokens=len(prepared[i][0]), llm_calls=1, seconds=seconds)
                bad = [c for c, v in scores.items() if not math.isfinite(v)]
                results[i] = TokenLogprobs(
                    logprobs={c: v for c, v in scores.items() if c not in bad},
                    missing=bad,
                    raw_top=raw,
                    usage=usage,
                )
        return [r for r in results if r is not None]

    async def next_token_logprobs_batch(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        """Log-probabilities (full vocabulary, fp32) of each single-token candidate as the
        next token after each request's messages and assistant ``prefill``: forwards of up
        to ``max_batch_size`` prompts (sorted by length, right-padded, no padding mask).
        :meth:`next_token_logprobs` is a batch of one: one forward pass."""
        if not requests:
            return []
        return await self._run(self._logprobs_sync, list(requests))

    # ------------------------------------------------------------------ generation

    def _generate_sync(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] | None,
        prefill: str,
    ) -> Completion:
        import torch
        from transformers import GenerationConfig as _GenerationConfig

        GenerationConfig: Any = _GenerationConfig

        t0 = time.perf_counter()
        prompt = self._prompt_ids(messages, prefill, max_tokens)
        sample = temperature > 0
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=None,
            top_k=None,
            eos_token_id=self._end_ids,
            pad_token_id=self._pad_id,
            stop_strings=list(stop) if stop else None,
            use_cache=True,
            return_dict_in_generate=True,
        )
        input_ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
        past, reused = self.prefix_cache.lookup(prompt)
        cache_kw = {self._cache_keyword: past} if past is not None else {}
        check_cancelled()
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            tokenizer=self.hf_tokenizer if stop else None,
            stopping_criteria=cancel_stopping_criteria(),
            **cache_kw,
        )
        check_cancelled()  # stopped by the token: a cut-off text is not an answer
        sequence = [int(t) for t in out.sequences[0].tolist()]
        self.prefix_cache.store(
            sequence, getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        )
        text, finish, n_completion = self._decode_new(sequence[len(prompt) :], stop)
        usage = Usage(
            prompt_tokens=len(prompt),
            completion_tokens=n_completion,
            llm_calls=1,
            seconds=time.perf_counter() - t0,
            cached_tokens=reused,
        )
        return Completion(text=text, finish_reason=finish, usage=usage, model=self.name)

    def _decode_new(self, new: list[int], stop: Sequence[str] | None) -> tuple[str, str, int]:
        """``(text, finish_reason, completion tokens)`` of the generated ids: the end token
        dropped (and counted), the text cut at the first ``stop`` string."""
        finish = "length"
        if new and new[-1] in self._end_ids:
            new = new[:-1]
            finish = "stop"
        n_completion = len(new) + (1 if finish == "stop" else 0)
        text: str = self.hf_tokenizer.decode(new, skip_special_tokens=True)
        for s in stop or ():
            cut = text.find(s)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return text, finish, n_completion

    async def generate(
        self, messages: Sequence[Message], *, max_tokens: int, **options: Unpack[GenerateOptions]
    ) -> Completion:
        """Greedy at ``temperature == 0`` (sampling otherwise); the text returned is what
        follows the ``prefill``, cut at the first ``stop`` string."""
        temperature, stop, prefill = generate_request(max_tokens, options)
        return await self._run(self._generate_sync, messages, max_tokens, temperature, stop, prefill)

    # ------------------------------------------------------------------ attention

    @property
    def attention_window(self) -> int:
        """Tokens over which attention rows see the whole prefix: the context window, or the
        model's sliding window when it is shorter (ICR sizes its passes with it)."""
        from hoprank.llm.runtime.attention import attention_span  # type: ignore[import-not-found,unused-ignore]

        span = attention_span(self.model)
        return self.context_window if span is None else min(span, self.context_window)

    async def attention_rows(
        self, prefix: str, suffixes: Sequence[str], **options: Unpack[AttentionOptions]
    ) -> AttentionRows:
        """Attention from each suffix to the prefix tokens (see :mod:`hoprank.llm.runtime.attention`)."""
        layers, heads, per_head = attention_options(options)
        from hoprank.llm.runtime.attention import attention_rows  # type: ignore[import-not-found,unused-ignore]

        return await self._run(
            attention_rows, self, prefix, suffixes, layers=layers, heads=heads, per_head=per_head
        )

    def __repr__(self) -> str:
        return f"TransformersEngine({self.name!r}, dtype={self.dtype}, device={self.device!r})"
