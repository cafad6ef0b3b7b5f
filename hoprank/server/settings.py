"""Server settings: what the service loads at startup and the limits it enforces."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from hoprank.errors import ConfigError
from hoprank.rankers.registry import served_ranker_names

__all__ = ["DEFAULT_TOKEN_ENV", "ServerSettings"]

DEFAULT_TOKEN_ENV = "HOPRANK_API_TOKEN"


class ServerSettings(BaseModel):
    """Configuration of one hoprank HTTP service.

    The engine named by ``model`` (a spec for :func:`hoprank.llm.load_engine`) is loaded
    once at startup and shared by every ranker. ``api_token``, when set, protects every
    ``/v1`` route with ``Authorization: Bearer <token>``. Limits are enforced before any
    model work starts: bodies over ``max_body_bytes`` get 413; too many documents, too long
    documents or queries get 422 naming the limit; more than ``max_concurrency`` running
    plus ``max_queue`` waiting requests get 429 with ``Retry-After`` at once; a request
    running longer than ``request_timeout_s`` (queue wait included) gets 504.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = Field(default=None, description="key for an OpenAI-compatible engine")
    engine_options: dict[str, Any] = Field(default_factory=dict)
    default_ranker: str | None = Field(
        default=None, description="ranker used when a request names none (default: first with an engine)"
    )
    rankers: tuple[str, ...] = Field(
        default_factory=served_ranker_names,
        description="enabled rankers (default: the registry's served ones)",
    )
    ranker_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    index_dir: Path | None = Field(default=None, description="BM25 index folder for /v1/ask")

    api_token: SecretStr | None = None

    max_concurrency: int = Field(default=2, ge=1)
    max_queue: int = Field(default=4, ge=0)
    retry_after_s: int = Field(default=1, ge=1)
    request_timeout_s: float = Field(default=120.0, gt=0)
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    max_documents: int = Field(default=100, ge=1)
    max_document_chars: int = Field(default=20_000, ge=1)
    max_query_chars: int = Field(default=2_000, ge=1)
    max_top_k: int = Field(default=50, ge=1, description="largest top_k accepted by /v1/ask")
    answer_max_tokens: int = Field(default=256, ge=1, description="answer length cap for /v1/ask")

    @field_validator("rankers")
    @classmethod
    def _rankers_not_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one ranker must be enabled")
        return v

    @property
    def resolved_default_ranker(self) -> str:
        """The ranker for requests that name none."""
        if self.default_ranker:
            return self.default_ranker
        if self.model and "first" in self.rankers:
            return "first"
        return "identity" if "identity" in self.rankers else self.rankers[0]

    def token_value(self) -> str | None:
        """The bearer token, or ``None`` when auth is off."""
        if self.api_token is None:
            return None
        value = self.api_token.get_secret_value()
        return value or None

    @classmethod
    def from_env(cls, token_env: str = DEFAULT_TOKEN_ENV, **overrides: Any) -> ServerSettings:
        """Settings with the bearer token taken from ``token_env`` unless given."""
        if "api_token" not in overrides:
            raw = os.environ.get(token_env)
            token = (raw or "").strip()
            if raw is not None and not token:
                # an empty token must not silently turn auth off
                raise ConfigError(f"{token_env} is set but empty; set a token or unset {token_env}")
            overrides["api_token"] = SecretStr(token) if token else None
        return cls(**overrides)
