"""The engine contract: one ``LLM`` protocol, declared capabilities, and the value types.

An engine turns chat messages into completions, next-token log-probabilities over a
set of candidate strings (FIRST, pointwise scoring) and, for in-process engines,
attention rows (ICR). It knows nothing of ranking.

**Capabilities.** What an engine can do beyond ``generate`` is *declared* in its
``capabilities`` and, where it needs methods of its own, *typed* by a protocol next to
:class:`LLM`:

=========================  ===========================================================
``Capability``             promise
=========================  ===========================================================
``GENERATE``               ``generate`` works
``TOKEN_LOGPROBS``         ``next_token_logprobs(_batch)`` work
``PREFILL``                a ``prefill`` continues the assistant turn
``RENDER``                 :class:`ChatRenderer`: ``render(messages, prefill)`` is the
                           exact prompt text the model sees (exact prompt counts)
``EXACT_TOKENIZER``        ``tokenizer`` is the model's own and an
                           :class:`ExactTokenizer` (``truncate_many``)
``ATTENTION``              :class:`AttentionEngine`: ``attention_rows`` and
                           ``attention_window``
=========================  ===========================================================

A caller checks a capability once, with :func:`require_capability` or the typed
accessors :func:`chat_renderer`, :func:`exact_tokenizer` and :func:`attention_engine`
(a declared flag *and* the protocol's methods), then calls typed methods. Wrappers
(:class:`~hoprank.llm.engines.batching.BatchingEngine`, :class:`~hoprank.llm.engines.cached.CachedEngine`)
forward the inner engine's flags and implement every protocol explicitly, raising
:class:`~hoprank.errors.CapabilityMissing` where the inner engine lacks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict, Unpack  # pydantic needs this TypedDict on Python < 3.12

from hoprank._sync import run_sync
from hoprank.errors import CapabilityMissing, ContextOverflow
from hoprank.types import Usage

__all__ = [
    "LLM",
    "AsyncCloseable",
    "AttentionEngine",
    "AttentionOptions",
    "AttentionRows",
    "Capability",
    "ChatRenderer",
    "Completion",
    "EngineLike",
    "ExactTokenizer",
    "ForwardedCapabilities",
    "GenerateOptions",
    "LogprobRequest",
    "Message",
    "SyncFacade",
    "TokenLogprobs",
    "Tokenizer",
    "attention_engine",
    "attention_options",
    "chat_renderer",
    "check_fits",
    "exact_tokenizer",
    "generate_options",
    "has_capability",
    "require_capability",
]


class Capability(str, Enum):
    GENERATE = "generate"
    TOKEN_LOGPROBS = "token_logprobs"
    ATTENTION = "attention"
    PREFILL = "prefill"  # can continue a partial assistant message (e.g. "[")
    RENDER = "render"  # ChatRenderer: renders its chat template (exact prompt counts)
    EXACT_TOKENIZER = "exact_tokenizer"  # tokenizer is the model's own ExactTokenizer


def check_fits(name: str, n_prompt: int, n_new: int, context_window: int) -> None:
    """Raise :class:`ContextOverflow` unless ``n_prompt + n_new`` tokens fit the context."""
    if n_prompt + n_new > context_window:
        raise ContextOverflow(
            f"{name}: prompt of {n_prompt} tokens + {n_new} new tokens exceeds the "
            f"context window of {context_window}",
            prompt_tokens=n_prompt,
            context_window=context_window,
        )


class Message(TypedDict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class GenerateOptions(TypedDict, total=False):
    """The optional arguments of ``generate`` (one declaration for every engine):
    ``temperature`` (default 0.0), ``stop`` strings (default none) and ``prefill``
    (default ``""``: text the assistant turn continues from)."""

    temperature: float
    stop: Sequence[str] | None
    prefill: str


def generate_options(options: GenerateOptions) -> tuple[float, Sequence[str] | None, str]:
    """``(temperature, stop, prefill)`` of ``options``, defaults filled in."""
    return options.get("temperature", 0.0), options.get("stop"), options.get("prefill", "")


class Completion(BaseModel):
    """A generated answer."""

    text: str
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    model: str = ""


class LogprobRequest(BaseModel):
    """One next-token log-probability question: after ``messages`` (+ ``prefill`` in the
    assistant turn), how likely is each string of ``candidates`` as the next token?"""

    messages: list[Message]
    candidates: list[str]
    prefill: str = ""


class TokenLogprobs(BaseModel):
    """Next-token log-probabilities for candidate strings.

    ``logprobs`` maps each candidate that the engine could score to its log-probability
    (natural log, over the full vocabulary); ``missing`` lists candidates the engine could
    not score (e.g. outside an API's ``top_logprobs``). ``raw_top`` keeps the engine's own
    top tokens when it has them, for traces.
    """

    logprobs: dict[str, float]
    missing: list[str] = Field(default_factory=list)
    raw_top: dict[str, float] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)


class AttentionRows(BaseModel):
    """Attention mass from each suffix's tokens to every prefix token.

    For a prefix encoded once and several suffixes encoded on its KV cache:
    ``prefix_offsets[t]`` is the (start, end) character span of prefix token ``t`` in
    the prefix text; ``rows[s][t]`` is the attention from the tokens of suffix ``s``
    to prefix token ``t``, summed over the selected layers, heads and suffix tokens;
    ``tokens_encoded[s]`` is how many new tokens the pass for suffix ``s`` encoded
    (the prefix is encoded once: ``prefix_tokens``). Optional details: ``prefix_ids``
    (the prefix token ids, to decode spans), ``prefix_seconds`` and ``suffix_seconds``
    (wall time of the prefix pass and of each suffix pass) and ``method`` (how the rows
    were computed, e.g. ``capture`` or ``eager``). ``heads``: the ``(layer, head)``
    pairs summed when a subset was asked for (empty: every head of ``layers``);
    ``head_rows``: with ``per_head=True``, one float32 array per suffix of shape
    ``(len(layers), heads_per_layer, prefix_tokens)`` (not serialised).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    prefix_offsets: list[tuple[int, int]]
    rows: list[list[float]]
    prefix_tokens: int
    tokens_encoded: list[int]
    layers: list[int]
    heads: list[tuple[int, int]] = Field(default_factory=list)
    head_rows: list[Any] = Field(default_factory=list, exclude=True)
    usage: Usage = Field(default_factory=Usage)
    prefix_ids: list[int] = Field(default_factory=list)
    prefix_seconds: float = 0.0
    suffix_seconds: list[float] = Field(default_factory=list)
    method: str = ""


class AttentionOptions(TypedDict, total=False):
    """The optional arguments of ``attention_rows`` (one declaration for every engine):
    ``layers`` (default all), ``heads`` (``(layer, head)`` pairs to sum instead of every
    head of ``layers``) and ``per_head`` (also return the unsummed rows)."""

    layers: Sequence[int] | None
    heads: Sequence[Sequence[int]] | None
    per_head: bool


def attention_options(
    options: AttentionOptions,
) -> tuple[Sequence[int] | None, Sequence[Sequence[int]] | None, bool]:
    """``(layers, heads, per_head)`` of ``options``, defaults filled in."""
    return options.get("layers"), options.get("heads"), options.get("per_head", False)


@runtime_checkable
class Tokenizer(Protocol):
    """Counts and truncates text in an engine's own tokens."""

    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def count(self, text: str) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...


@runtime_checkable
class ExactTokenizer(Tokenizer, Protocol):
    """The served model's own tokenizer (``Capability.EXACT_TOKENIZER``): counts are exact,
    and a window's passages are cut in one call."""

    def truncate_many(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """:meth:`Tokenizer.truncate` of each text (each result a prefix of its text)."""
        ...


@runtime_checkable
class EngineLike(Protocol):
    """What every engine, wrapper and capability protocol shares: a name, the declared
    capabilities and a tokenizer."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    @property
    def tokenizer(self) -> Tokenizer: ...


@runtime_checkable
class ChatRenderer(Protocol):
    """An engine that renders its chat template (``Capability.RENDER``)."""

    def render(self, messages: Sequence[Message], prefill: str = "") -> str:
        """The chat-templated prompt (generation prompt added), with ``prefill`` appended."""
        ...


@runtime_checkable
class AttentionEngine(EngineLike, Protocol):
    """An engine that computes attention rows (``Capability.ATTENTION``; ICR)."""

    @property
    def context_window(self) -> int: ...

    @property
    def attention_window(self) -> int:
        """Tokens over which attention rows see the whole prefix (the context window, or a
        shorter sliding window)."""
        ...

    async def attention_rows(
        self, prefix: str, suffixes: Sequence[str], **options: Unpack[AttentionOptions]
    ) -> AttentionRows:
        """Rows of attention from each suffix to the prefix tokens (:class:`AttentionOptions`)."""
        ...


@runtime_checkable
class AsyncCloseable(Protocol):
    """An engine holding connections or processes to release (``await engine.aclose()``)."""

    async def aclose(self) -> None: ...


@runtime_checkable
class LLM(Protocol):
    """A model engine. Async core; every engine also offers sync wrappers."""

    name: str
    capabilities: frozenset[Capability]
    tokenizer: Tokenizer
    context_window: int

    async def generate(
        self, messages: Sequence[Message], *, max_tokens: int, **options: Unpack[GenerateOptions]
    ) -> Completion:
        """A completion of ``messages``, at most ``max_tokens`` new tokens; ``options``:
        :class:`GenerateOptions`."""
        ...

    async def next_token_logprobs(
        self, messages: Sequence[Message], *, candidates: Sequence[str], prefill: str = ""
    ) -> TokenLogprobs: ...

    async def next_token_logprobs_batch(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]: ...

    def describe(self) -> dict[str, Any]:
        """What identifies this engine's outputs (model, revision/sha256, dtype...)."""
        ...


def has_capability(engine: EngineLike, capability: Capability) -> bool:
    """Whether ``engine`` declares ``capability`` and implements its protocol."""
    if capability not in engine.capabilities:
        return False
    if capability is Capability.RENDER:
        return isinstance(engine, ChatRenderer)
    if capability is Capability.ATTENTION:
        return isinstance(engine, AttentionEngine)
    if capability is Capability.EXACT_TOKENIZER:
        return isinstance(engine.tokenizer, ExactTokenizer)
    return True


def require_capability(engine: EngineLike, capability: Capability, hint: str = "") -> None:
    """Raise :class:`CapabilityMissing` unless :func:`has_capability`."""
    if not has_capability(engine, capability):
        raise CapabilityMissing(capability.value, engine.name, hint)


def chat_renderer(engine: EngineLike) -> ChatRenderer | None:
    """``engine`` as a :class:`ChatRenderer` when it declares ``RENDER``, else None."""
    if Capability.RENDER in engine.capabilities and isinstance(engine, ChatRenderer):
        return engine
    return None


def exact_tokenizer(engine: EngineLike) -> ExactTokenizer | None:
    """``engine.tokenizer`` when the engine declares ``EXACT_TOKENIZER``, else None."""
    tok = engine.tokenizer
    if Capability.EXACT_TOKENIZER in engine.capabilities and isinstance(tok, ExactTokenizer):
        return tok
    return None


def attention_engine(engine: EngineLike, hint: str = "") -> AttentionEngine:
    """``engine`` as an :class:`AttentionEngine`; :class:`CapabilityMissing` unless it
    declares ``ATTENTION`` and implements it."""
    if Capability.ATTENTION in engine.capabilities and isinstance(engine, AttentionEngine):
        return engine
    raise CapabilityMissing(Capability.ATTENTION.value, engine.name, hint)


class ForwardedCapabilities:
    """``render`` and ``attention_window`` of a wrapper engine, taken from the engine it
    wraps (``wrapped_engine``) through the typed accessors, so every wrapper implements
    these protocols the same way: :class:`CapabilityMissing` where the inner engine
    lacks them."""

    #: why the attention capability is needed, for the CapabilityMissing message
    attention_hint = "needs an in-process transformers engine"

    if TYPE_CHECKING:

        @property
        def name(self) -> str: ...

    @property
    def wrapped_engine(self) -> EngineLike:
        raise NotImplementedError

    def render(self, messages: Sequence[Message], prefill: str = "") -> str:
        """The wrapped engine's chat template (``Capability.RENDER``)."""
        renderer = chat_renderer(self.wrapped_engine)
        if renderer is None:
            raise CapabilityMissing(Capability.RENDER.value, self.name, "the wrapped engine cannot render")
        return renderer.render(messages, prefill)

    @property
    def attention_window(self) -> int:
        """The wrapped engine's attention window (``Capability.ATTENTION``)."""
        return attention_engine(self.wrapped_engine, self.attention_hint).attention_window


class SyncFacade:
    """The sync facade every engine offers: blocking twins of the async methods.

    Mixed into engines that implement :class:`LLM` (``self`` is typed so: the async
    signatures are declared once, on the protocol); each call runs through
    :func:`hoprank._sync.run_sync`.
    """

    def generate_sync(
        self: LLM, messages: Sequence[Message], *, max_tokens: int, **options: Unpack[GenerateOptions]
    ) -> Completion:
        return run_sync(self.generate(messages, max_tokens=max_tokens, **options))

    def next_token_logprobs_sync(
        self: LLM, messages: Sequence[Message], *, candidates: Sequence[str], prefill: str = ""
    ) -> TokenLogprobs:
        return run_sync(self.next_token_logprobs(messages, candidates=candidates, prefill=prefill))

    def next_token_logprobs_batch_sync(self: LLM, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        return run_sync(self.next_token_logprobs_batch(requests))
