"""Per-component configs: each ranker's parameters as one validated, frozen pydantic model.

A ranker declares its parameters once, as a :class:`ComponentConfig` subclass
(``config_class``); its constructor keywords, ``make_ranker(name, **params)``, a CLI's
``-p key=value`` and a service request all validate through it, and
:meth:`hoprank.rankers.base.BaseRanker.describe` reports it. A wrong value raises
:class:`~hoprank.errors.ConfigError` (the validator's own error when there is exactly
one, so messages stay those of the checks).

The windowed rankers (FIRST, RankGPT, any :class:`~hoprank.rankers.listwise.ListwiseRanker`)
share :class:`WindowedConfig`: the sliding window (:class:`~hoprank.rankers.window.WindowConfig`)
and the passage budget (:class:`PassageBudget`).
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hoprank.errors import ConfigError, HoprankError

__all__ = [
    "ComponentConfig",
    "PassageBudget",
    "WindowConfig",
    "WindowedConfig",
    "check_window_params",
    "config_error",
]


def config_error(e: ValidationError, what: str) -> HoprankError:
    """The error to raise for a failed validation of ``what``: the validator's own typed
    error when it is the only one, else a :class:`ConfigError` listing every problem."""
    errors = e.errors()
    if len(errors) == 1:
        cause = (errors[0].get("ctx") or {}).get("error")
        if isinstance(cause, HoprankError):
            return cause
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        msg = str(cause) if isinstance(cause, HoprankError) else err["msg"]
        parts.append(f"{loc}: {msg}" if loc else msg)
    return ConfigError(f"bad parameters for {what}: {'; '.join(parts)}")


class ComponentConfig(BaseModel):
    """Base of the component configs: frozen, unknown keys refused, and every validation
    failure a :class:`~hoprank.errors.HoprankError` (see :func:`config_error`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise config_error(e, type(self).__name__) from e

    @classmethod
    def build(cls, config: ComponentConfig | None, params: dict[str, Any]) -> Self:
        """``config`` (an instance of this class) updated with ``params``, validated."""
        if config is None:
            return cls(**params)
        if not isinstance(config, cls):
            raise ConfigError(f"config must be a {cls.__name__}, got {type(config).__name__}")
        if not params:
            return config
        return cls(**{**config.model_dump(), **params})

    def public(self) -> dict[str, Any]:
        """The values as JSON-friendly data (for manifests and traces): the prompt is left
        out (a ranker reports it as ``name@version#hash``)."""
        return self.model_dump(mode="json", exclude={"prompt"})


def check_window_params(window: int, step: int) -> None:
    """Raise :class:`ConfigError` unless ``window >= 2`` and ``1 <= step < window``."""
    if window < 2:
        raise ConfigError(f"window must be >= 2, got {window}")
    if not 1 <= step < window:
        raise ConfigError(f"step must satisfy 1 <= step < window ({window}), got {step}")


class WindowConfig(ComponentConfig):
    """Sliding-window parameters. ``window >= 2``, ``1 <= step < window``, ``passes >= 1``."""

    window: int = 20
    step: int = 10
    passes: int = 1
    focus_top_k: bool = True

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_window_params(self.window, self.step)
        if self.passes < 1:
            raise ConfigError(f"passes must be >= 1, got {self.passes}")
        return self


class PassageBudget(ComponentConfig):
    """How passages are shown: at most ``max_passage_tokens`` of the engine's tokens each
    (less when a window would not fit the context), identifiers neutralised or not."""

    max_passage_tokens: int = Field(100, ge=1)
    neutralize: bool = True


class WindowedConfig(PassageBudget):
    """The parameters every sliding-window ranker shares: prompt, window and passage budget.

    ``step`` defaults to ``max(1, window // 2)``."""

    #: a prompt name, path, mapping or template (``PromptLike``; ``load_prompt`` checks it)
    prompt: Any = None
    window: int = 20
    step: int | None = None
    passes: int = 1
    focus_top_k: bool = True

    @model_validator(mode="after")
    def _check_window(self) -> Self:
        check_window_params(self.window, self.resolved_step)
        if self.passes < 1:
            raise ConfigError(f"passes must be >= 1, got {self.passes}")
        return self

    @property
    def resolved_step(self) -> int:
        return self.step if self.step is not None else max(1, self.window // 2)

    def window_config(self) -> WindowConfig:
        """The sliding-window driver's settings."""
        return WindowConfig(
            window=self.window, step=self.resolved_step, passes=self.passes, focus_top_k=self.focus_top_k
        )
