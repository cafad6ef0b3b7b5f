"""The hoprank exception tree.

Every failure the SDK reports is a subclass of :class:`HoprankError`. Errors are never
swallowed and never returned as results.
"""

from __future__ import annotations

__all__ = [
    "AdapterMismatch",
    "BudgetExhausted",
    "CapabilityMissing",
    "ConfigError",
    "ContextOverflow",
    "DatasetError",
    "EngineError",
    "EngineTimeout",
    "HoprankError",
    "InvalidInput",
    "MissingExtra",
    "ModelPackError",
    "ParseError",
    "PromptError",
    "RateLimited",
    "RetrievalError",
]


class HoprankError(Exception):
    """Base class of every error raised by hoprank."""


class InvalidInput(HoprankError, ValueError):
    """The caller passed something the API cannot accept (empty query, k <= 0, ...)."""


class ConfigError(HoprankError, ValueError):
    """A configuration value is wrong or inconsistent."""


class AdapterMismatch(ConfigError):
    """A LoRA adapter was trained on another base model (its recorded sha256 differs from
    the model's) or does not fit the model's layers."""

    def __init__(self, message: str, *, expected: str | None = None, actual: str | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class EngineError(HoprankError):
    """A model engine failed. ``retryable`` says whether trying again may succeed."""

    def __init__(self, message: str, *, retryable: bool = False, status_code: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code


class RateLimited(EngineError):
    """The engine answered 429. ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status_code: int | None = 429
    ) -> None:
        super().__init__(message, retryable=True, status_code=status_code)
        self.retry_after = retry_after


class EngineTimeout(EngineError):
    """A request to the engine did not finish within its timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class ContextOverflow(EngineError):
    """The prompt does not fit the model's context window."""

    def __init__(
        self, message: str, *, prompt_tokens: int | None = None, context_window: int | None = None
    ) -> None:
        super().__init__(message, retryable=False)
        self.prompt_tokens = prompt_tokens
        self.context_window = context_window


class CapabilityMissing(HoprankError):
    """The engine lacks a capability the caller needs (e.g. ATTENTION for ICR)."""

    def __init__(self, capability: str, engine: str, hint: str = "") -> None:
        msg = f"engine {engine!r} lacks capability {capability}"
        super().__init__(f"{msg}: {hint}" if hint else msg)
        self.capability = capability
        self.engine = engine


class ParseError(HoprankError):
    """A model output could not be parsed. ``raw`` holds the output."""

    def __init__(self, message: str, *, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


class MissingExtra(HoprankError, ImportError):
    """An optional dependency is not installed. The message says what to install."""

    def __init__(self, extra: str, package: str | None = None) -> None:
        what = f"{package} is not installed; " if package else ""
        super().__init__(f"{what}pip install 'hoprank[{extra}]'")
        self.extra = extra
        self.package = package


class ModelPackError(HoprankError):
    """A model pack could not be found, assembled or verified."""


class PromptError(HoprankError):
    """A prompt template is unknown, malformed, or rendered with wrong variables."""


class DatasetError(HoprankError):
    """A dataset file is missing or malformed (the message names file and line)."""


class RetrievalError(HoprankError):
    """A retriever or index failed."""


class BudgetExhausted(HoprankError):
    """An agent ran out of its step, token or time budget."""
