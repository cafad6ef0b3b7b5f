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

:func:`make_ranker` builds one by name. Importing this package never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from hoprank.errors import ConfigError
from hoprank.llm.base import LLM
from hoprank.rankers.base import BaseRanker, Ranker, RankerOutput, check_permutation
from hoprank.rankers.baselines import CrossEncoder, CrossEncoderRanker, Identity
from hoprank.rankers.consistency import SelfConsistency
from hoprank.rankers.first import FIRST
from hoprank.rankers.fusion import PriorFusion
from hoprank.rankers.parsing import ParseResult, parse_permutation
from hoprank.rankers.pointwise import PointwiseLLM
from hoprank.rankers.rankgpt import RankGPT
from hoprank.rankers.setwise import Setwise
from hoprank.rankers.window import WindowConfig, WindowSpan, slide, window_spans

__all__ = [
    "FIRST",
    "RANKERS",
    "BaseRanker",
    "CrossEncoder",
    "CrossEncoderRanker",
    "Identity",
    "ParseResult",
    "PointwiseLLM",
    "PriorFusion",
    "RankGPT",
    "Ranker",
    "RankerOutput",
    "SelfConsistency",
    "Setwise",
    "WindowConfig",
    "WindowSpan",
    "check_permutation",
    "make_ranker",
    "parse_permutation",
    "slide",
    "window_spans",
]

#: Names accepted by :func:`make_ranker`.
RANKERS = ("identity", "rankgpt", "first", "setwise", "pointwise", "icr", "cross-encoder")

_ICR_CLASS_NAMES = ("ICR", "ICRRanker", "InContextReranker")


def _icr_class() -> Any:
    module = importlib.import_module("hoprank.rankers.icr")
    for attr in _ICR_CLASS_NAMES:
        cls = getattr(module, attr, None)
        if cls is not None:
            return cls
    raise ConfigError(f"hoprank.rankers.icr defines none of {_ICR_CLASS_NAMES}")


def make_ranker(name: str, engine: LLM | None = None, **params: Any) -> BaseRanker:
    """Build a ranker by name: ``identity``, ``rankgpt``, ``first``, ``pointwise``,
    ``icr`` (all but ``identity`` and ``cross-encoder`` need ``engine``) or
    ``cross-encoder`` (``model=`` a local cross-encoder folder). ``params`` go to the
    ranker's constructor; unknown names raise :class:`ConfigError`.

    ``prior_weight=w`` (and optionally ``prior_k``) wraps the ranker in
    :class:`PriorFusion`: its order fused with the input order by weighted RRF.
    ``samples=K`` (and optionally ``sc_aggregate``, ``sc_seed``, ``sc_include_input``)
    wraps it in :class:`SelfConsistency`: ``K`` seeded shuffles, orders aggregated."""
    sc_keys = ("samples", "sc_aggregate", "sc_seed", "sc_include_input")
    if any(key in params for key in sc_keys):
        sc = {key: params.pop(key) for key in sc_keys if key in params}
        return SelfConsistency(
            make_ranker(name, engine, **params),
            samples=sc.get("samples", 3),
            aggregate=sc.get("sc_aggregate", "borda"),
            seed=sc.get("sc_seed", 0),
            include_input=bool(sc.get("sc_include_input", False)),
        )
    if "prior_weight" in params or "prior_k" in params:
        weight = params.pop("prior_weight", 1.0)
        k = params.pop("prior_k", 60)
        return PriorFusion(make_ranker(name, engine, **params), weight=weight, k=k)
    key = name.strip().lower().replace("_", "-")
    if key == "identity":
        if params:
            raise ConfigError(f"identity takes no parameters, got {sorted(params)}")
        return Identity()
    if key in ("cross-encoder", "crossencoder"):
        if "model" not in params:
            raise ConfigError("cross-encoder needs model=<path or name of a cross-encoder>")
        return CrossEncoderRanker(**params)
    classes: dict[str, Any] = {
        "rankgpt": RankGPT,
        "first": FIRST,
        "setwise": Setwise,
        "pointwise": PointwiseLLM,
    }
    if key == "icr":
        cls = _icr_class()
    elif key in classes:
        cls = classes[key]
    else:
        raise ConfigError(f"unknown ranker {name!r}; known rankers: {', '.join(RANKERS)}")
    if engine is None:
        raise ConfigError(f"ranker {key!r} needs an engine (engine=...)")
    try:
        ranker: BaseRanker = cls(engine, **params)
    except TypeError as e:
        raise ConfigError(f"bad parameters for ranker {key!r}: {e}") from e
    return ranker
