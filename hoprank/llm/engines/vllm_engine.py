"""An in-process vLLM engine (``vllm.LLM``, GPU), behind the optional ``vllm`` extra.

Written against vLLM's documented offline API: ``LLM(model, max_logprobs=...)``,
``LLM.get_tokenizer()``, ``LLM.generate(prompts, sampling_params, use_tqdm=False)`` and
``SamplingParams(temperature, max_tokens, stop, logprobs, allowed_token_ids,
logprob_token_ids)``. Prompts are rendered with the HF tokenizer's chat template (the
generation prompt added, then the ``prefill``) and passed as token ids, so no second BOS
is added.

Next-token log-probabilities: each request asks for one token with
``allowed_token_ids`` = the candidates' ids and ``logprobs=max_logprobs``; where the
installed vLLM knows ``logprob_token_ids`` the candidates' own log-probabilities are
requested as well, otherwise they are read from the top-``max_logprobs`` list (the
sampled token, always a candidate, is always in it; others may be ``missing``). vLLM takes
these log-probabilities *before* logit processors (``allowed_token_ids`` included), so
they are over the full vocabulary; with ``renormalize=True`` (default) they are
renormalised over the candidates (log-softmax over candidates) when every candidate was
scored, and left on the full-vocabulary scale (that of ``raw_top``) when one is missing. A whole batch
goes to vLLM in one ``generate`` call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from typing_extensions import Unpack

from hoprank.errors import EngineError, InvalidInput, MissingExtra
from hoprank.llm.base import Capability, Completion, GenerateOptions, LogprobRequest, Message, TokenLogprobs
from hoprank.llm.engines._common import HF_CAPABILITIES, LocalEngine, generate_request
from hoprank.types import Usage

__all__ = ["VLLMEngine"]

logger = logging.getLogger(__name__)

_DEFAULT_CONTEXT = 32768


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise MissingExtra("vllm", "vllm") from e
    return vllm


def _accepts(cls: Any, name: str) -> bool:
    fields = getattr(cls, "__struct_fields__", None)  # msgspec.Struct (vLLM >= 0.6)
    if fields is not None:
        return name in fields
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


class VLLMEngine(LocalEngine):
    """vLLM in this process. ``model`` is a pack name, a transformers folder or an HF id.

    Pass ``llm=`` to reuse an existing ``vllm.LLM``; other keyword arguments go to
    ``vllm.LLM`` (``dtype``, ``gpu_memory_utilization``, ``max_model_len``...).
    ``max_logprobs`` is both the engine argument and the ``logprobs`` asked per request.
    Candidates must each be a single token (as for the transformers engine).
    """

    def __init__(
        self,
        model: str,
        *,
        llm: Any = None,
        max_logprobs: int = 20,
        context_window: int | None = None,
        renormalize: bool = True,
        name: str | None = None,
        **engine_kwargs: Any,
    ) -> None:
        if max_logprobs < 1:
            raise InvalidInput("max_logprobs must be >= 1")
        self._vllm = _import_vllm()
        self.model = model
        self.name = name or model
        if llm is None:
            from hoprank.llm.models.packs import PACKS, resolve

            path = str(resolve(model).path) if model in PACKS else model
            engine_kwargs.setdefault("max_logprobs", max_logprobs)
            t0 = time.perf_counter()
            llm = self._vllm.LLM(model=path, **engine_kwargs)
            logger.info("vLLM loaded %s in %.1f s", path, time.perf_counter() - t0)
        self.llm: Any = llm
        self.max_logprobs = max_logprobs
        self.renormalize = renormalize
        self._use_hf_tokenizer(llm.get_tokenizer())
        self.context_window: int = context_window or self._model_len() or _DEFAULT_CONTEXT
        self.capabilities: frozenset[Capability] = HF_CAPABILITIES
        self._token_ids_param = _accepts(self._vllm.SamplingParams, "logprob_token_ids")
        self._lock = threading.Lock()

    def _model_len(self) -> int | None:
        try:
            return int(self.llm.llm_engine.model_config.max_model_len)
        except (AttributeError, TypeError, ValueError):
            return None

    def __repr__(self) -> str:
        return f"VLLMEngine({self.name!r}, context_window={self.context_window})"

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "vllm",
            "model": self.model,
            "context_window": self.context_window,
            "max_logprobs": self.max_logprobs,
            "logprobs": "renormalised over candidates" if self.renormalize else "full vocabulary",
            "vllm_version": str(getattr(self._vllm, "__version__", "?")),
        }

    # ------------------------------------------------------------------ prompts

    def _run_generate(self, prompts: list[list[int]], params: list[Any]) -> list[Any]:
        with self._lock:
            outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        result = list(outputs)
        if len(result) != len(prompts):
            raise EngineError(f"{self.name}: vLLM returned {len(result)} outputs for {len(prompts)} prompts")
        return result

    # ------------------------------------------------------------------ API

    async def generate(
        self, messages: Sequence[Message], *, max_tokens: int, **options: Unpack[GenerateOptions]
    ) -> Completion:
        """Greedy at ``temperature == 0``; the text returned is what follows ``prefill``."""
        temperature, stop, prefill = generate_request(max_tokens, options)
        t0 = time.perf_counter()
        prompt = self._prompt_ids(messages, prefill, max_tokens)
        params = self._vllm.SamplingParams(
            temperature=temperature, max_tokens=max_tokens, stop=list(stop) if stop else None
        )
        (out,) = await asyncio.to_thread(self._run_generate, [prompt], [params])
        if not out.outputs:
            raise EngineError(f"{self.name}: vLLM returned no completion")
        best = out.outputs[0]
        usage = Usage(
            prompt_tokens=len(prompt),
            completion_tokens=len(best.token_ids),
            llm_calls=1,
            seconds=time.perf_counter() - t0,
        )
        finish = best.finish_reason
        return Completion(
            text=str(best.text), finish_reason=str(finish) if finish else None, usage=usage, model=self.name
        )

    def _logprob_params(self, cand_ids: list[int]) -> Any:
        kwargs: dict[str, Any] = {
            "temperature": 0.0,
            "max_tokens": 1,
            "logprobs": self.max_logprobs,
            "allowed_token_ids": sorted(set(cand_ids)),
        }
        if self._token_ids_param:
            kwargs["logprob_token_ids"] = sorted(set(cand_ids))
        return self._vllm.SamplingParams(**kwargs)

    def _read(
        self, out: Any, req: LogprobRequest, cand_ids: list[int], prompt_len: int, seconds: float
    ) -> TokenLogprobs:
        best = out.outputs[0] if out.outputs else None
        position = best.logprobs[0] if best is not None and best.logprobs else None
        if position is None:
            raise EngineError(f"{self.name}: vLLM returned no logprobs (was logprobs= ignored?)")
        scores: dict[str, float] = {}
        for c, tid in zip(req.candidates, cand_ids, strict=True):
            entry = position.get(tid)
            value = float(getattr(entry, "logprob", entry)) if entry is not None else -math.inf
            if math.isfinite(value):
                scores[c] = value
        # Renormalise only a complete candidate distribution: with a candidate unseen (top-k
        # only), present values stay on the full-vocabulary scale of raw_top, whose lowest
        # entry callers use as the bound on the unseen one (pointwise, FIRST).
        if self.renormalize and scores and len(scores) == len(req.candidates):
            peak = max(scores.values())
            z = peak + math.log(sum(math.exp(v - peak) for v in scores.values()))
            scores = {c: v - z for c, v in scores.items()}
        raw: dict[str, float] = {}
        for tid, entry in position.items():
            token = getattr(entry, "decoded_token", None) or self.tokenizer.decode([int(tid)])
            raw[str(token)] = max(float(getattr(entry, "logprob", entry)), raw.get(str(token), -math.inf))
        usage = Usage(prompt_tokens=prompt_len, completion_tokens=1, llm_calls=1, seconds=seconds)
        return TokenLogprobs(
            logprobs=scores,
            missing=[c for c in req.candidates if c not in scores],
            raw_top=raw,
            usage=usage,
        )

    async def next_token_logprobs_batch(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        """All requests in one ``llm.generate`` call (vLLM batches them itself)."""
        if not requests:
            return []
        t0 = time.perf_counter()
        prompts, params, cands = [], [], []
        for r in requests:
            ids = self._candidate_ids(r.candidates)
            prompts.append(self._prompt_ids(r.messages, r.prefill, 1))
            params.append(self._logprob_params(ids))
            cands.append(ids)
        outputs = await asyncio.to_thread(self._run_generate, prompts, params)
        seconds = (time.perf_counter() - t0) / len(requests)
        return [
            self._read(out, r, ids, len(p), seconds)
            for out, r, ids, p in zip(outputs, requests, cands, prompts, strict=True)
        ]

    # ------------------------------------------------------------------ sync facade
