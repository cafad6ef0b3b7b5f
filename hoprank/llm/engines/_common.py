"""What the engines share, written once.

- :class:`EngineConfig`: an engine's options as one validated, frozen object, built from
  a ready config and/or keywords (``OpenAIEngineConfig``, ``TransformersEngineConfig``);
- :class:`HFChatEngine`: an engine over the model's own Hugging Face tokenizer (the
  in-process ones): its capabilities, the chat template, prompt ids checked against the
  context window, single-token candidate ids;
- :class:`BatchOfOne`: ``next_token_logprobs`` answered as a batch of one, for engines
  (and wrappers) whose native call is ``next_token_logprobs_batch``;
- :class:`LocalEngine`: the base of the in-process engines (:class:`HFChatEngine`,
  :class:`BatchOfOne` and the sync facade);
- :class:`EngineWrapper`: an engine around another (``BatchingEngine``,
  ``CachedEngine``): the protocol's properties, ``describe()``, ``generate`` and the
  capability protocols are the wrapped engine's unless the wrapper overrides them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import Unpack

from hoprank.errors import ConfigError, InvalidInput
from hoprank.llm.base import (
    LLM,
    AttentionOptions,
    AttentionRows,
    Capability,
    Completion,
    ForwardedCapabilities,
    GenerateOptions,
    LogprobRequest,
    Message,
    SyncFacade,
    Tokenizer,
    TokenLogprobs,
    attention_engine,
    attention_options,
    check_fits,
    generate_options,
)
from hoprank.llm.tokenizers.hf_tokenizer import HFTokenizer

__all__ = [
    "HF_CAPABILITIES",
    "BatchOfOne",
    "EngineConfig",
    "EngineWrapper",
    "HFChatEngine",
    "LocalEngine",
    "generate_request",
]

C = TypeVar("C", bound="EngineConfig")

#: what an engine over the model's own HF tokenizer and its logits can do
HF_CAPABILITIES = frozenset(
    {
        Capability.GENERATE,
        Capability.TOKEN_LOGPROBS,
        Capability.PREFILL,
        Capability.RENDER,
        Capability.EXACT_TOKENIZER,
    }
)


def generate_request(max_tokens: int, options: GenerateOptions) -> tuple[float, Sequence[str] | None, str]:
    """``(temperature, stop, prefill)`` of a ``generate`` call whose ``max_tokens`` is
    checked (:class:`~hoprank.errors.InvalidInput` below 1)."""
    if max_tokens < 1:
        raise InvalidInput("max_tokens must be >= 1")
    return generate_options(options)


class EngineConfig(BaseModel):
    """The options of an engine (all but the model), validated once; subclasses declare
    the fields and may add cross-field checks in :meth:`check`."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    #: the engine class these options belong to, for error messages
    engine: ClassVar[str] = "engine"

    @classmethod
    def build(cls: type[C], config: C | None, options: Mapping[str, Any]) -> C:
        """``config`` updated with ``options``; :class:`ConfigError` on unknown or bad ones."""
        data = {**(dict(config) if config is not None else {}), **options}
        try:
            out = cls(**data)
        except ValidationError as e:
            raise ConfigError(f"{cls.engine}: {e}") from e
        out.check()
        return out

    def check(self) -> None:
        """Checks across fields (:class:`ConfigError`); none by default."""


class HFChatEngine:
    """An engine that renders, counts and encodes prompts with the model's own HF
    tokenizer (call :meth:`_use_hf_tokenizer` once ``name`` is set)."""

    name: str
    context_window: int
    hf_tokenizer: Any
    tokenizer: Tokenizer
    _hf: HFTokenizer

    def _use_hf_tokenizer(self, hf_tokenizer: Any) -> None:
        self.hf_tokenizer = hf_tokenizer
        self._hf = HFTokenizer(hf_tokenizer, name=self.name)
        self.tokenizer = self._hf

    def render(self, messages: Sequence[Message], prefill: str = "") -> str:
        """The chat-templated prompt (generation prompt added), with ``prefill`` appended."""
        return self._hf.render_chat(messages, prefill)

    def _encode_prompt(self, text: str) -> list[int]:
        # through HFTokenizer: a prompt a ranker just counted to fit it is not encoded twice
        return self._hf.encode(text)

    def _prompt_ids(self, messages: Sequence[Message], prefill: str, n_new: int) -> list[int]:
        """The rendered prompt's token ids; :class:`~hoprank.errors.ContextOverflow` when
        it and ``n_new`` more tokens do not fit the context window."""
        ids = self._encode_prompt(self.render(messages, prefill))
        check_fits(self.name, len(ids), n_new, self.context_window)
        return ids

    def _candidate_ids(self, candidates: Sequence[str]) -> list[int]:
        return self._hf.single_token_ids(candidates)


class BatchOfOne:
    """``next_token_logprobs`` as a batch of one ``next_token_logprobs_batch`` call."""

    async def next_token_logprobs_batch(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        raise NotImplementedError

    async def next_token_logprobs(
        self, messages: Sequence[Message], *, candidates: Sequence[str], prefill: str = ""
    ) -> TokenLogprobs:
        req = LogprobRequest(messages=list(messages), candidates=list(candidates), prefill=prefill)
        return (await self.next_token_logprobs_batch([req]))[0]


class LocalEngine(HFChatEngine, BatchOfOne, SyncFacade):
    """An in-process engine: the model's own HF tokenizer and chat template, a single
    next-token request as a batch of one, and the sync facade."""


class EngineWrapper(ForwardedCapabilities):
    """An engine around another (:attr:`wrapped_engine`): its name, capabilities,
    tokenizer, context window (taken when wrapped), ``describe()`` and ``generate`` are
    the wrapped engine's, and it implements the capability protocols explicitly
    (``render``, ``attention_window`` from :class:`~hoprank.llm.base.ForwardedCapabilities`;
    ``attention_rows`` through :meth:`_wrapped_attention_rows`), raising
    :class:`~hoprank.errors.CapabilityMissing` where the wrapped engine lacks one. A
    wrapper overrides what it changes."""

    def __init__(self, engine: LLM) -> None:
        self.name: str = engine.name
        self.capabilities: frozenset[Capability] = engine.capabilities
        self.tokenizer: Tokenizer = engine.tokenizer
        self.context_window: int = engine.context_window

    @property
    def wrapped_engine(self) -> LLM:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return dict(self.wrapped_engine.describe())

    async def generate(
        self, messages: Sequence[Message], *, max_tokens: int, **options: Unpack[GenerateOptions]
    ) -> Completion:
        return await self.wrapped_engine.generate(messages, max_tokens=max_tokens, **options)

    async def attention_rows(
        self, prefix: str, suffixes: Sequence[str], **options: Unpack[AttentionOptions]
    ) -> AttentionRows:
        """The wrapped engine's attention rows (``Capability.ATTENTION``)."""
        return await self._wrapped_attention_rows(prefix, suffixes, *attention_options(options))

    async def _wrapped_attention_rows(
        self,
        prefix: str,
        suffixes: Sequence[str],
        layers: Sequence[int] | None,
        heads: Sequence[Sequence[int]] | None,
        per_head: bool,
    ) -> AttentionRows:
        """The wrapped engine's attention rows; ``heads`` and ``per_head`` are passed only
        when set (an engine may predate them)."""
        inner = attention_engine(self.wrapped_engine, self.attention_hint)
        if heads is None and not per_head:
            return await inner.attention_rows(prefix, suffixes, layers=layers)
        return await inner.attention_rows(prefix, suffixes, layers=layers, heads=heads, per_head=per_head)
