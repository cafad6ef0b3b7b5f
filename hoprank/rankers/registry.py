"""The one registry of ranker names: name -> class, config and what the ranker needs.

Each ranker module declares its own :class:`RankerSpec` next to its class, in a
module-level ``RANKER_SPECS`` tuple; this module finds them by importing every module of
:mod:`hoprank.rankers` (:func:`discover_specs`), on first use of :data:`REGISTRY`,
:func:`ranker_names`, :func:`ranker_spec` or :func:`~hoprank.rankers.make_ranker`.
Adding a ranker therefore touches only its module, its prompt and its test. Modules that
declare nothing (windows, parsing, wrappers...) are simply not rankers. Discovery
imports no model code (no torch).

:func:`hoprank.rankers.make_ranker` builds from it; a CLI, the service and the docs read
it (:func:`ranker_names`, :func:`ranker_spec`) instead of keeping lists of their own.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from hoprank.errors import ConfigError
from hoprank.rankers.base import RankerSpec

__all__ = [
    "CONSISTENCY_PARAMS",
    "FUSION_PARAMS",
    "REGISTRY",
    "RankerSpec",
    "check_ranker_params",
    "discover_specs",
    "ranker_names",
    "ranker_spec",
    "served_ranker_names",
]

#: parameters that wrap a ranker in :class:`~hoprank.rankers.SelfConsistency` (``make_ranker``)
CONSISTENCY_PARAMS = ("samples", "sc_aggregate", "sc_seed", "sc_include_input")
#: parameters that wrap a ranker in :class:`~hoprank.rankers.PriorFusion` (``make_ranker``)
FUSION_PARAMS = ("prior_weight", "prior_k")

#: the module-level name a ranker module declares its specs under
SPECS_NAME = "RANKER_SPECS"


def discover_specs(path: Iterable[str], package: str) -> dict[str, RankerSpec]:
    """Import every module of ``package`` found on ``path`` and collect the
    :class:`RankerSpec` entries of their ``RANKER_SPECS``, by name, sorted by
    ``(order, name)``. :class:`ConfigError` when two specs share a name or alias, or a
    module declares something that is not a spec."""
    specs: list[RankerSpec] = []
    owner: dict[str, str] = {}  # name or alias -> the module that declared it
    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        module_name = f"{package}.{info.name}"
        module = importlib.import_module(module_name)
        for spec in vars(module).get(SPECS_NAME, ()):
            if not isinstance(spec, RankerSpec):
                raise ConfigError(f"{module_name}.{SPECS_NAME} holds {spec!r}, not a RankerSpec")
            if any(spec is seen for seen in specs):  # re-exported by another module
                continue
            for key in (spec.name, *spec.aliases):
                if key in owner:
                    raise ConfigError(
                        f"duplicate ranker name {key!r}: declared by {owner[key]} and {module_name}"
                    )
                owner[key] = module_name
            specs.append(spec)
    return {s.name: s for s in sorted(specs, key=lambda s: (s.order, s.name))}


class _Registry(Mapping[str, RankerSpec]):
    """Every ranker by name, in the order the docs list them; discovered on first use."""

    def __init__(self) -> None:
        self._specs: dict[str, RankerSpec] | None = None

    def _load(self) -> dict[str, RankerSpec]:
        if self._specs is None:
            import hoprank.rankers as package

            self._specs = discover_specs(package.__path__, package.__name__)
        return self._specs

    def refresh(self) -> None:
        """Forget the discovered specs; the next use looks again."""
        self._specs = None

    def __getitem__(self, name: str) -> RankerSpec:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return f"REGISTRY({list(self)})"


REGISTRY = _Registry()
"""Every ranker by name, in the order the docs list them (a read-only mapping)."""


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
