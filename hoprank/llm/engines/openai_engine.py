"""An engine for any OpenAI-compatible chat-completions endpoint.

Works with OpenAI itself, a vLLM server (or a fleet of them: pass several base URLs and
requests are balanced client-side) and the llama.cpp server. The official
``openai.AsyncOpenAI`` client is built with ``max_retries=0``; retries happen once, in
:mod:`hoprank.llm.transport.retry`. The API key never appears in reprs, ``describe()``, logs or
error messages.

Prefill (continuing a partial assistant turn such as ``"["``) depends on the server:

- ``server="vllm"``: the prefix is sent as a final assistant message with
  ``extra_body={"continue_final_message": True, "add_generation_prompt": False}``;
- ``server="llamacpp"``: the llama.cpp server continues a trailing assistant message by
  itself (and echoes it, which is stripped from the returned text);
- ``server="openai"``: the OpenAI API cannot continue a message, so the prefill is *not
  sent* and ``PREFILL`` is not among the capabilities. For labels, read
  :meth:`next_token_logprobs` tolerates the ``[X`` form a model writes without prefill.

:meth:`OpenAIEngine.next_token_logprobs` asks for ``max_tokens=1, logprobs=True,
top_logprobs=K`` and reads each candidate ``X`` from the returned top tokens in the forms
``X``, `` X`` and ``[X`` (the max log-probability over the forms; Qwen's BPE merges ``[``
with a capital letter). A response without usable ``logprobs`` is an error, never an
empty result.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from typing_extensions import Unpack

from hoprank.errors import CapabilityMissing, ConfigError, InvalidInput
from hoprank.llm.base import (
    Capability,
    Completion,
    ExactTokenizer,
    GenerateOptions,
    LogprobRequest,
    Message,
    SyncFacade,
    Tokenizer,
    TokenLogprobs,
)
from hoprank.llm.engines._common import EngineConfig, generate_request
from hoprank.llm.engines._openai_parse import (
    message_content,
    parse_completion,
    parse_top_logprobs,
    score_candidates,
)
from hoprank.llm.transport._endpoints import Balance, EndpointPool
from hoprank.llm.transport.retry import RetryPolicy, RetryStats, retry_async
from hoprank.types import Usage

__all__ = ["EngineStats", "OpenAIEngine", "OpenAIEngineConfig"]

logger = logging.getLogger(__name__)

Server = Literal["openai", "vllm", "llamacpp"]
_DUMMY_KEY = "sk-no-key-required"
_OPENAI_URL = "https://api.openai.com/v1"
_MAX_TOP_LOGPROBS = 20


@dataclass
class EngineStats:
    """Counters over the engine's lifetime: logical calls, HTTP attempts, retries, failures."""

    calls: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0

    def add(self, stats: RetryStats, *, failed: bool) -> None:
        self.calls += 1
        self.attempts += stats.count
        self.retries += stats.retries
        self.failures += int(failed)


@runtime_checkable
class _ChatTemplateTokenizer(Protocol):
    """A tokenizer that renders the served model's chat template (``HFTokenizer``)."""

    def render_chat(self, messages: Sequence[Message], prefill: str = "") -> str: ...


def _as_tokenizer(tokenizer: Any, model: str) -> tuple[Tokenizer, bool]:
    """The engine's tokenizer and whether it is the model's own (not the o200k stand-in)."""
    if tokenizer is None:
        from hoprank.llm.tokenizers.tiktoken_offline import TiktokenTokenizer

        try:
            return TiktokenTokenizer.for_model(model), True
        except (KeyError, ConfigError):  # unknown model, or an encoding not available offline
            logger.warning(
                "no tokenizer given for %r and tiktoken does not know it: counting tokens with "
                "o200k_base (approximate; pass tokenizer=HFTokenizer(...) for a served open model)",
                model,
            )
            return TiktokenTokenizer("o200k_base"), False
    if isinstance(tokenizer, Tokenizer):
        return tokenizer, True
    if hasattr(tokenizer, "apply_chat_template") or hasattr(tokenizer, "convert_tokens_to_ids"):
        from hoprank.llm.tokenizers.hf_tokenizer import HFTokenizer

        return HFTokenizer(tokenizer), True
    raise ConfigError(f"tokenizer {type(tokenizer).__name__} implements neither Tokenizer nor an HF API")


class OpenAIEngineConfig(EngineConfig):
    """The options of :class:`OpenAIEngine` (all but the model), validated once.

    ``base_url``: one URL or a list (default ``OPENAI_BASE_URL``, else OpenAI's);
    ``api_key`` (default ``OPENAI_API_KEY``; local servers get a dummy key); ``server``:
    ``openai``, ``vllm`` or ``llamacpp``; ``timeout`` seconds; ``max_concurrency``
    requests in flight per endpoint; ``context_window`` tokens; ``tokenizer`` (a
    :class:`~hoprank.llm.base.Tokenizer`, an HF tokenizer, or None: tiktoken);
    ``supports_prefill`` (default: vllm and llamacpp); ``retry``; ``balance``
    (``least_in_flight`` or ``round_robin``); ``top_logprobs`` (1..20); ``logit_bias``;
    ``restrict_candidates``; ``extra_body`` sent with every request; ``name``.
    """

    engine: ClassVar[str] = "OpenAIEngine"

    base_url: str | Sequence[str] | None = None
    api_key: str | None = None
    server: str = "openai"
    timeout: float = 60.0
    max_concurrency: int = 8
    context_window: int = 32768
    tokenizer: Any = None
    supports_prefill: bool | None = None
    retry: Any = None  # a RetryPolicy (kept as given, not re-validated)
    balance: str = "least_in_flight"
    top_logprobs: int = _MAX_TOP_LOGPROBS
    logit_bias: float | None = None
    restrict_candidates: bool = False
    extra_body: dict[str, Any] | None = None
    name: str | None = None

    def check(self) -> None:
        if self.server not in ("openai", "vllm", "llamacpp"):
            raise ConfigError(f"server must be 'openai', 'vllm' or 'llamacpp', got {self.server!r}")
        if self.max_concurrency < 1 or self.timeout <= 0 or self.context_window < 1:
            raise ConfigError("max_concurrency, timeout and context_window must be positive")
        if self.balance not in ("least_in_flight", "round_robin"):
            raise ConfigError(f"unknown balance strategy {self.balance!r}")
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ConfigError(f"retry must be a RetryPolicy, got {type(self.retry).__name__}")

    def endpoints(self) -> tuple[list[str], str]:
        """The endpoint URLs and the API key to send them."""
        base_url = self.base_url if self.base_url is not None else os.environ.get("OPENAI_BASE_URL") or None
        urls = [base_url] if base_url is None or isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ConfigError("base_url list is empty")
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if urls == [None]:
                raise ConfigError("no API key: pass api_key= or set OPENAI_API_KEY")
            key = _DUMMY_KEY
        return [u or _OPENAI_URL for u in urls], key


class OpenAIEngine(SyncFacade):
    """An OpenAI-compatible chat-completions endpoint (OpenAI, vLLM server, llama.cpp server).

    ``base_url`` may be a list: requests then go to the endpoint with the fewest requests
    in flight (``balance="least_in_flight"``, ties round-robin) or strictly in turn
    (``"round_robin"``); a retry picks again, so a failing endpoint is routed around.
    ``api_key`` falls back to ``OPENAI_API_KEY``; local servers get a dummy key.
    ``logit_bias`` (OpenAI models, tokenizer known) adds that bias to every single-token
    form of the candidates so they show up in ``top_logprobs``: the returned values are
    then relative among candidates, not full-vocabulary. ``restrict_candidates`` sends
    vLLM's ``allowed_token_ids`` (needs the served model's tokenizer).
    """

    def __init__(self, model: str, *, config: OpenAIEngineConfig | None = None, **options: Any) -> None:
        """``options``: the fields of :class:`OpenAIEngineConfig` (or a ready ``config``)."""
        cfg = OpenAIEngineConfig.build(config, options)
        urls, key = cfg.endpoints()
        self.config = cfg
        self.model = model
        self.name = cfg.name or model
        self.server: Server = cfg.server  # type: ignore[assignment]  # checked by cfg.check()
        self.timeout = float(cfg.timeout)
        self.max_concurrency = cfg.max_concurrency
        self.context_window = cfg.context_window
        self.retry_policy = cfg.retry or RetryPolicy()
        self.balance: Balance = cfg.balance  # type: ignore[assignment]  # checked by cfg.check()
        self.top_logprobs = max(1, min(_MAX_TOP_LOGPROBS, cfg.top_logprobs))
        self.logit_bias = cfg.logit_bias
        self.restrict_candidates = cfg.restrict_candidates
        self.extra_body = dict(cfg.extra_body or {})
        self.tokenizer: Tokenizer
        #: True unless the tokenizer is the o200k stand-in for a model tiktoken does not know
        self.tokenizer_exact: bool
        self.tokenizer, self.tokenizer_exact = _as_tokenizer(cfg.tokenizer, model)
        self.capabilities: frozenset[Capability] = self._capabilities(cfg)
        self.stats = EngineStats()
        self._api_key = key
        self._pool = EndpointPool(
            urls,
            api_key=key,
            timeout=self.timeout,
            max_concurrency=self.max_concurrency,
            balance=self.balance,
        )

    def _capabilities(self, cfg: OpenAIEngineConfig) -> frozenset[Capability]:
        prefill = (
            cfg.supports_prefill if cfg.supports_prefill is not None else cfg.server in ("vllm", "llamacpp")
        )
        caps = {Capability.GENERATE, Capability.TOKEN_LOGPROBS}
        if prefill:
            caps.add(Capability.PREFILL)
        if isinstance(self.tokenizer, _ChatTemplateTokenizer):  # the served model's HF tokenizer
            caps.add(Capability.RENDER)
        if self.tokenizer_exact and isinstance(self.tokenizer, ExactTokenizer):
            caps.add(Capability.EXACT_TOKENIZER)
        return frozenset(caps)

    # ------------------------------------------------------------------ plumbing

    def __repr__(self) -> str:
        hosts = ",".join(self._pool.hosts())
        return f"OpenAIEngine(model={self.model!r}, server={self.server!r}, endpoints={hosts!r})"

    def describe(self) -> dict[str, Any]:
        """Model, server kind and endpoint hosts (never the API key or URL credentials)."""
        return {
            "engine": "openai",
            "model": self.model,
            "server": self.server,
            "hosts": self._pool.hosts(),
            "context_window": self.context_window,
            "tokenizer": self.tokenizer.name,
            "top_logprobs": self.top_logprobs,
        }

    def render(self, messages: Sequence[Message], prefill: str = "") -> str:
        """The prompt as the served model's chat template renders it (``Capability.RENDER``:
        only with the model's HF tokenizer; the server's own template may differ in
        details such as a default system prompt)."""
        if not isinstance(self.tokenizer, _ChatTemplateTokenizer):
            raise CapabilityMissing(
                Capability.RENDER.value, self.name, "pass tokenizer= the served model's HF tokenizer"
            )
        return self.tokenizer.render_chat(messages, prefill)

    def _redact(self, text: str) -> str:
        key = self._api_key
        if key and key != _DUMMY_KEY and len(key) >= 6:
            text = text.replace(key, "***")
        return text

    async def aclose(self) -> None:
        """Close the HTTP clients of the current event loop."""
        await self._pool.aclose()

    async def __aenter__(self) -> OpenAIEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def endpoint_requests(self) -> dict[str, int]:
        """How many requests each endpoint has been sent (for load-balancing checks)."""
        return self._pool.requests()

    # ------------------------------------------------------------------ requests

    def _messages(
        self, messages: Sequence[Message], prefill: str
    ) -> tuple[list[dict[str, str]], dict[str, Any]]:
        if not messages:
            raise InvalidInput("messages must not be empty")
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        for i, m in enumerate(msgs):
            try:
                m["content"].encode("utf-8")
            except UnicodeEncodeError as e:  # lone surrogates cannot go over HTTP as JSON/UTF-8
                raise InvalidInput(
                    f"message {i} is not valid Unicode at character {e.start} ({e.reason}); "
                    "hoprank.rankers.passages.scrub_surrogates repairs such text"
                ) from e
            except AttributeError as e:
                raise InvalidInput(f"message {i} content must be a string") from e
        extra: dict[str, Any] = {}
        if prefill and Capability.PREFILL in self.capabilities:
            msgs.append({"role": "assistant", "content": prefill})
            if self.server == "vllm":
                extra = {"continue_final_message": True, "add_generation_prompt": False}
        elif prefill:
            logger.debug("%s: server cannot continue a prefill; sending without %r", self.name, prefill)
        return msgs, extra

    def _request(
        self, messages: Sequence[Message], prefill: str, max_tokens: int, temperature: float
    ) -> tuple[list[dict[str, str]], dict[str, Any], dict[str, Any]]:
        """The chat messages, the request body and the server-specific extra body of a call."""
        msgs, extra = self._messages(messages, prefill)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": msgs,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        return msgs, body, extra

    async def _post(
        self, what: str, body: dict[str, Any], extra_body: dict[str, Any]
    ) -> tuple[dict[str, Any], RetryStats]:
        stats = RetryStats()
        merged = {**self.extra_body, **extra_body}

        async def attempt(remaining: float) -> dict[str, Any]:
            async with self._pool.lease() as client:
                raw = await client.chat.completions.with_raw_response.create(
                    **body,
                    extra_body=merged or None,
                    timeout=max(0.001, min(self.timeout, remaining)),
                )
                text: str = raw.text
            return parse_completion(text, what=what)

        try:
            data = await retry_async(attempt, self.retry_policy, stats=stats, what=what, redact=self._redact)
        except BaseException:
            self.stats.add(stats, failed=True)
            raise
        self.stats.add(stats, failed=False)
        return data, stats

    def _usage(
        self, data: dict[str, Any], messages: Sequence[dict[str, str]], completion: str, t0: float
    ) -> Usage:
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        if usage is not None and isinstance(usage.get("prompt_tokens"), int):
            prompt = int(usage["prompt_tokens"])
            done = int(usage.get("completion_tokens") or 0)
            details = usage.get("prompt_tokens_details")
            cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
        else:  # the server sent no usage: count in our own tokenizer
            prompt = sum(self.tokenizer.count(m["content"]) for m in messages)
            done = self.tokenizer.count(completion)
            cached = 0
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=done,
            llm_calls=1,
            seconds=time.perf_counter() - t0,
            cached_tokens=cached,
        )

    async def generate(
        self, messages: Sequence[Message], *, max_tokens: int, **options: Unpack[GenerateOptions]
    ) -> Completion:
        """A chat completion; the text returned is what follows the ``prefill``."""
        temperature, stop, prefill = generate_request(max_tokens, options)
        t0 = time.perf_counter()
        msgs, body, extra = self._request(messages, prefill, max_tokens, temperature)
        if stop:
            body["stop"] = list(stop)
        data, _ = await self._post(f"{self.name} generate", body, extra)
        choice = data["choices"][0]
        text = message_content(choice)
        if (
            self.server == "llamacpp"
            and prefill
            and msgs[-1]["role"] == "assistant"
            and text.startswith(prefill)
        ):
            text = text[len(prefill) :]
        finish = choice.get("finish_reason")
        return Completion(
            text=text,
            finish_reason=finish if isinstance(finish, str) else None,
            usage=self._usage(data, msgs, text, t0),
            model=str(data.get("model") or self.model),
        )

    def _candidate_token_ids(self, candidates: Sequence[str], prefill: str = "") -> dict[int, str]:
        """Single-token forms of each candidate, the form the model writes first
        (after a prefill: the bare candidate; without one: ``[X``) before the others."""
        ids: dict[int, str] = {}
        forms = ("{}", " {}", "[{}") if prefill else ("[{}", "{}", " {}")
        for c in candidates:
            for form in forms:
                enc = self.tokenizer.encode(form.format(c))
                if len(enc) == 1:
                    ids.setdefault(enc[0], c)
        return ids

    async def next_token_logprobs(
        self, messages: Sequence[Message], *, candidates: Sequence[str], prefill: str = ""
    ) -> TokenLogprobs:
        """Log-probabilities of each candidate as the next token (from ``top_logprobs``)."""
        if not candidates:
            raise InvalidInput("candidates must not be empty")
        t0 = time.perf_counter()
        msgs, body, extra = self._request(messages, prefill, 1, 0.0)
        body["logprobs"] = True
        body["top_logprobs"] = min(self.top_logprobs, _MAX_TOP_LOGPROBS)
        if self.logit_bias is not None or (self.restrict_candidates and self.server == "vllm"):
            ids = self._candidate_token_ids(candidates, prefill)
            if not ids:
                logger.warning(
                    "%s: no candidate maps to a single token of %s", self.name, self.tokenizer.name
                )
            elif self.logit_bias is not None:
                # one biased form per candidate: three forms of each would crowd the
                # top_logprobs slots and push other candidates out of the reply
                first_form: dict[str, int] = {}
                for i, c in ids.items():
                    first_form.setdefault(c, i)
                body["logit_bias"] = {str(i): self.logit_bias for i in first_form.values()}
            if ids and self.restrict_candidates and self.server == "vllm":
                extra = {**extra, "allowed_token_ids": sorted(ids)}
        data, _ = await self._post(f"{self.name} next_token_logprobs", body, extra)
        top = parse_top_logprobs(data, what=f"{self.name} next_token_logprobs")
        scores, missing = score_candidates(top, candidates)
        return TokenLogprobs(
            logprobs=scores,
            missing=missing,
            raw_top=top,
            usage=self._usage(data, msgs, message_content(data["choices"][0]), t0),
        )

    async def next_token_logprobs_batch(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        """Concurrent :meth:`next_token_logprobs` (bounded by ``max_concurrency``); the first
        failure cancels the rest and is raised."""
        tasks = [
            asyncio.ensure_future(
                self.next_token_logprobs(r.messages, candidates=r.candidates, prefill=r.prefill)
            )
            for r in requests
        ]
        if not tasks:
            return []
        _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        # read every finished task's exception (not only the first), so a batch in which
        # several requests failed leaves no "Task exception was never retrieved" behind
        errors = [e for t in tasks if t.done() and not t.cancelled() and (e := t.exception()) is not None]
        if errors:
            raise errors[0]
        return [t.result() for t in tasks]

    # ------------------------------------------------------------------ sync facade
