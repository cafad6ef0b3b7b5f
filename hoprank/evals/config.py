"""The experiment configuration: dataset × first stage × ranker × engine × prompt × params."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hoprank.evals.metrics import canonical_metrics

__all__ = ["ExperimentConfig"]

# Engine parameters that change how calls travel, not what they return.
# engine parameters that do not change the outputs (transport, threads, the prefix KV
# cache): they may differ between a run and its resumption
_TRANSPORT = frozenset(
    {"base_url", "api_key", "timeout", "max_concurrency", "balance", "retry", "threads", "prefix_cache"}
)


def stable_engine_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without the ones that leave the outputs unchanged (``_TRANSPORT``)."""
    return {k: v for k, v in params.items() if k not in _TRANSPORT}


def fingerprint_of(identity: dict[str, Any]) -> str:
    """The 16-hex fingerprint of an experiment's identity (its run folder's key)."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ExperimentConfig(BaseModel):
    """One experiment, JSON-serialisable (it is written into ``manifest.json``).

    * ``dataset``: a shipped sample name (``sample-dl19``), a folder or a file
      (format detected, or ``dataset_format``).
    * ``first_stage``: a run of the dataset by name (``bm25``, ``context``...), a TREC run
      file, or ``retriever:<name>`` (a :mod:`hoprank.tools` retriever over the corpus);
      None takes the dataset's only run. ``depth`` candidates per query are reranked.
    * ``ranker`` + ``ranker_params``: built with ``hoprank.rankers.make_ranker``.
    * ``model`` + ``engine_params``: built with ``hoprank.llm.load_engine`` (None for
      rankers that need no model, e.g. ``identity``).
    * ``prompt``: a prompt name, ``name@version`` or a YAML path, passed to the ranker.
    * ``queries``/``limit``: which queries (dataset order; ``limit`` keeps the first N judged
      ones, those with qrels; the manifest and metrics.json count the unjudged ones skipped).
    * ``relevance_level``: overrides the dataset's binary-relevance threshold.
    """

    model_config = ConfigDict(extra="forbid")

    dataset: str
    dataset_format: str = "auto"
    first_stage: str | None = None
    depth: int = Field(default=100, ge=1)
    ranker: str = "identity"
    ranker_params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    engine_params: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = None
    top_k: int | None = Field(default=None, ge=1)
    queries: list[str] | None = None
    limit: int | None = Field(default=None, ge=1)
    metrics: list[str] | None = None
    relevance_level: int | None = None
    concurrency: int = Field(default=1, ge=1)
    executor: Literal["local", "ray"] = "local"
    name: str | None = None

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, v: list[str] | None) -> list[str] | None:
        return canonical_metrics(v) if v is not None else None

    def identity(self) -> dict[str, Any]:
        """The fields that determine the per-query results. Concurrency, executor, name,
        the metric settings and transport engine parameters (endpoints, timeouts) may
        change between a run and its resumption."""
        data = self.model_dump(
            mode="json", exclude={"concurrency", "executor", "name", "metrics", "relevance_level"}
        )
        data["engine_params"] = stable_engine_params(self.engine_params)
        return data

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.identity())

    @property
    def label(self) -> str:
        """A short display name: ``name`` or ``ranker[/model][/prompt]``."""
        if self.name:
            return self.name
        parts = [self.ranker]
        if self.model:
            parts.append(self.model)
        if self.prompt:
            parts.append(self.prompt)
        return "/".join(parts)
