"""The one registry of ranker names: name -> class, config and what the ranker needs.

:func:`hoprank.rankers.make_ranker` builds from it; a CLI, the service and the docs read
it (:func:`ranker_names`, :func:`ranker_spec`) instead of keeping lists of their own.
A spec loads its class on demand, so listing rankers imports no model code (ICR's
module is imported only when ICR is asked for).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hoprank.errors import ConfigError
from hoprank.rankers.base import BaseRanker
from hoprank.rankers.config import ComponentConfig

__all__ = [
    "CONSISTENCY_PARAMS",
    "FUSION_PARAMS",
    "REGISTRY",
    "RankerSpec",
    "check_ranker_params",
    "ranker_names",
    "ranker_spec",
    "served_ranker_names",
]

#: parameters that wrap a ranker in :class:`~hoprank.rankers.SelfConsistency` (``make_ranker``)
CONSISTENCY_PARAMS = ("samples", "sc_aggregate", "sc_seed", "sc_include_input")
#: parameters that wrap a ranker in :class:`~hoprank.rankers.PriorFusion` (``make_ranker``)
FUSION_PARAMS = ("prior_weight", "prior_k")


@dataclass(frozen=True)
class RankerSpec:
    """One registered ranker."""

    name: str
    summary: str
    load: Callable[[], type[BaseRanker]]
    #: whether the constructor takes an engine as its first argument
    needs_engine: bool = True
    #: the prompt it renders when none is given (manifests record it), if any
    default_prompt: str | None = None
    aliases: tuple[str, ...] = ()
    #: enabled by default in the HTTP service (needs no parameter, a bounded number of calls)
    served: bool = True

    @property
    def cls(self) -> type[BaseRanker]:
        return self.load()

    @property
    def config_class(self) -> type[ComponentConfig] | None:
        """The class of the ranker's parameters (None: it takes none)."""
        return self.load().config_class


def _identity() -> type[BaseRanker]:
    from hoprank.rankers.baselines import Identity

    return Identity


def _rankgpt() -> type[BaseRanker]:
    from hoprank.rankers.rankgpt import RankGPT

    return RankGPT


def _first() -> type[BaseRanker]:
    from hoprank.rankers.first import FIRST

    return FIRST


def _setwise() -> type[BaseRanker]:
    from hoprank.rankers.setwise import Setwise

    return Setwise


def _pointwise() -> type[BaseRanker]:
    from hoprank.rankers.pointwise import PointwiseLLM

    return PointwiseLLM


def _icr() -> type[BaseRanker]:
    from hoprank.rankers.icr import ICRRanker

    return ICRRanker


def _cross_encoder() -> type[BaseRanker]:
    from hoprank.rankers.baselines import CrossEncoderRanker

    return CrossEncoderRanker


REGISTRY: dict[str, RankerSpec] = {
    s.name: s
    for s in (
        RankerSpec("identity", "the first-stage order (no model)", _identity, needs_engine=False),
        RankerSpec("rankgpt", "sliding-window permutation generation", _rankgpt, default_prompt="rankgpt"),
        RankerSpec("first", "sliding-window single-token label logits", _first, default_prompt="first"),
        RankerSpec(
            "setwise",
            "setwise heapsort / bubble sort over label logits",
            _setwise,
            default_prompt="setwise",
            served=False,
        ),
        RankerSpec("pointwise", "yes/no log-probability per passage", _pointwise, default_prompt="pointwise"),
        RankerSpec("icr", "in-context reranking from attention", _icr, default_prompt="icr"),
        RankerSpec(
            "cross-encoder",
            "a sentence-transformers cross-encoder (model=...)",
            _cross_encoder,
            needs_engine=False,
            aliases=("crossencoder",),
            served=False,
        ),
    )
}
"""Every ranker by name, in the order the docs list them."""


def ranker_names() -> tuple[str, ...]:
    """The names :func:`~hoprank.rankers.make_ranker` accepts (without aliases)."""
    return tuple(REGISTRY)


def served_ranker_names() -> tuple[str, ...]:
    """The rankers the HTTP service enables when its settings name none."""
    return tuple(name for name, spec in REGISTRY.items() if spec.served)


def ranker_spec(name: str) -> RankerSpec:
    """The spec of ``name`` (case, ``_``/``-`` and aliases forgiven); :class:`ConfigError`
    for an unknown name."""
    key = name.strip().lower().replace("_", "-")
    for spec in REGISTRY.values():
        if key == spec.name or key in spec.aliases:
            return spec
    raise ConfigError(f"unknown ranker {name!r}; known rankers: {', '.join(REGISTRY)}")


def check_ranker_params(name: str, params: dict[str, Any]) -> None:
    """Validate ``params`` for ranker ``name`` with its config class (the wrapper
    parameters of :data:`CONSISTENCY_PARAMS` and :data:`FUSION_PARAMS` aside), without
    building it; :class:`ConfigError` on an unknown name or a bad parameter."""
    spec = ranker_spec(name)
    own = {k: v for k, v in params.items() if k not in CONSISTENCY_PARAMS + FUSION_PARAMS}
    config_class = spec.config_class
    if config_class is None:
        if own:
            raise ConfigError(f"{spec.name} takes no parameters, got {sorted(own)}")
        return
    config_class(**own)
