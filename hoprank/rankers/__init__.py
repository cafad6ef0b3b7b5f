"""hoprank.rankers: one ``rank(query, docs)`` API over every reranker.

- :class:`Identity` — the first-stage order (no model);
- :class:`PointwiseLLM` — yes/no log-probability per passage;
- :class:`RankGPT` — sliding-window permutation generation;
- :class:`FIRST` — sliding-window single-token logits;
- ``ICR`` — attention-based in-context reranking (:mod:`hoprank.rankers.icr`, loaded lazily);
- :class:`CrossEncoderRanker` — a sentence-transformers cross-encoder (``local`` extra);
- :class:`Setwise` — setwise heapsort / bubble sort over label log-probabilities;
- :class:`PriorFusion` — any of them fused with the first-stage order (weighted RRF);
- :class:`SelfConsistency` — any of them over seeded shuffles, orders aggregated.

:func:`make_ranker` builds one by name (:mod:`hoprank.rankers.registry`: each ranker
module declares its ``RANKER_SPECS``). Importing this package never imports torch.
"""

from __future__ import annotations

from typing import Any

from hoprank.errors import ConfigError
from hoprank.llm.base import LLM
from hoprank.rankers.base import BaseRanker, Ranker, RankerOutput, check_permutation
from hoprank.rankers.baselines import CrossEncoder, CrossEncoderRanker, Identity
from hoprank.rankers.config import ComponentConfig, PassageBudget, WindowedConfig
from hoprank.rankers.consistency import SelfConsistency
from hoprank.rankers.first import FIRST, FIRSTConfig
from hoprank.rankers.fusion import FusionConfig, PriorFusion
from hoprank.rankers.listwise import ListwiseConfig
from hoprank.rankers.parsing import ParseResult, parse_permutation
from hoprank.rankers.pointwise import PointwiseConfig, PointwiseLLM
from hoprank.rankers.rankgpt import RankGPT, RankGPTConfig
from hoprank.rankers.registry import (
    CONSISTENCY_PARAMS,
    REGISTRY,
    RankerSpec,
    check_ranker_params,
    ranker_names,
    ranker_spec,
)
from hoprank.rankers.setwise import Setwise, SetwiseConfig
from hoprank.rankers.window import WindowConfig, WindowSpan, slide, window_spans

__all__ = [
    "FIRST",
    "RANKERS",
    "REGISTRY",
    "BaseRanker",
    "ComponentConfig",
    "CrossEncoder",
    "CrossEncoderRanker",
    "FIRSTConfig",
    "FusionConfig",
    "Identity",
    "ListwiseConfig",
    "ParseResult",
    "PassageBudget",
    "PointwiseConfig",
    "PointwiseLLM",
    "PriorFusion",
    "RankGPT",
    "RankGPTConfig",
    "Ranker",
    "RankerOutput",
    "RankerSpec",
    "SelfConsistency",
    "Setwise",
    "SetwiseConfig",
    "WindowConfig",
    "WindowSpan",
    "WindowedConfig",
    "check_permutation",
    "check_ranker_params",
    "make_ranker",
    "parse_permutation",
    "ranker_names",
    "ranker_spec",
    "slide",
    "window_spans",
]


def __getattr__(name: str) -> Any:
    """``RANKERS``: the names accepted by :func:`make_ranker` (:data:`REGISTRY` has their
    classes and configs), computed on first use so that importing the package discovers
    no rankers."""
    if name == "RANKERS":
        return ranker_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_ranker(name: str, engine: LLM | None = None, **params: Any) -> BaseRanker:
    """Build a ranker by name (:data:`REGISTRY`): ``identity``, ``rankgpt``, ``first``,
    ``setwise``, ``pointwise``, ``icr`` (all but ``identity`` and ``cross-encoder`` need ``engine``) or
    ``cross-encoder`` (``model=`` a local cross-encoder folder). ``params`` go to the
    ranker's constructor, which validates them with its config; unknown names and bad
    parameters raise :class:`ConfigError`.

    ``prior_weight=w`` (and optionally ``prior_k``) wraps the ranker in
    :class:`PriorFusion`: its order fused with the input order by weighted RRF.
    ``samples=K`` (and optionally ``sc_aggregate``, ``sc_seed``, ``sc_include_input``)
    wraps it in :class:`SelfConsistency`: ``K`` seeded shuffles, orders aggregated."""
    if any(key in params for key in CONSISTENCY_PARAMS):
        sc = {key: params.pop(key) for key in CONSISTENCY_PARAMS if key in params}
        options = {k.removeprefix("sc_"): v for k, v in sc.items()}
        return SelfConsistency(make_ranker(name, engine, **params), **options)
    if "prior_weight" in params or "prior_k" in params:
        weight = params.pop("prior_weight", 1.0)
        k = params.pop("prior_k", 60)
        return PriorFusion(make_ranker(name, engine, **params), weight=weight, k=k)
    spec = ranker_spec(name)
    cls = spec.load()
    if spec.config_class is None and params:
        raise ConfigError(f"{spec.name} takes no parameters, got {sorted(params)}")
    try:
        if not spec.needs_engine:
            return cls(**params)
        if engine is None:
            raise ConfigError(f"ranker {spec.name!r} needs an engine (engine=...)")
        return cls(engine, **params)  # type: ignore[call-arg]
    except TypeError as e:
        raise ConfigError(f"bad parameters for ranker {spec.name!r}: {e}") from e
