"""QA systems as data: :class:`QASystem` (a validated, frozen pydantic config) and the named
presets ``a``, ``b``, ``c0``, ``c`` and ``d`` of the HotpotQA agents benchmark.

A system is what ``hoprank eval --task qa`` evaluates and what
:func:`hoprank.agents.systems.build_system` builds: a retriever (BM25, dense or hybrid,
indexed in memory from the corpus or loaded from an index folder), then either the
:class:`~hoprank.agents.pipeline.DecomposeRetrieveRerank` pipeline (decomposition and the
bridge stage on or off, RRF fusion, a reranker over a pool) or the
:class:`~hoprank.agents.multihop.MultiHopAgent` with its budget, and optionally the
short-answer :class:`~hoprank.agents.answer.Answerer` on the top ``answer_k`` passages.

The presets are the benchmark's systems, parameter for parameter (BM25 depth 20 per
query, RRF k=10 with weight 2 on the original question's lists, a pool of 20 for the
reranker, ``top_k=10`` evidence, the agent with 4 steps of 5 passages, answers from the
top 5): ``benchmarks/agents_hotpotqa.py`` and the README's snippet use these very objects.

=====  ==============================================================
``a``  single-query BM25 (no model)
``b``  BM25 + FIRST rerank of the top 20
``c0`` decompose + bridge + per-query BM25 + RRF (no rerank)
``c``  ``c0`` + FIRST rerank of the fused top 20
``d``  MultiHopAgent (JSON action protocol, BM25 tool, 4 steps, k=5)
=====  ==============================================================

Overrides (:func:`apply_overrides`, the CLI's ``-p key=value``) take a field name
(``ranker=icr``), a dotted path (``pipeline.rrf_k=60``, ``agent.budget.max_steps=6``,
``ranker_params.window=10``) or, as a shorthand, a field of the system's pipeline or agent
config (``rrf_k=60``, ``max_steps=6``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hoprank.agents.multihop import Budget, MultiHopConfig
from hoprank.agents.pipeline import PipelineConfig
from hoprank.errors import ConfigError
from hoprank.rankers.config import config_error

__all__ = [
    "PRESETS",
    "QASystem",
    "apply_overrides",
    "load_system_file",
    "preset",
    "preset_names",
    "resolve_systems",
]

PromptRole = Literal["decompose", "bridge", "answer", "agent"]

BENCHMARK_PIPELINE = PipelineConfig(k=20, pool_depth=20, top_k=10, rrf_k=10, original_weight=2.0)
"""The pipeline settings of the benchmark's systems a, b, c0 and c."""

BENCHMARK_AGENT = MultiHopConfig(budget=Budget(max_steps=4), k=5)
"""The agent settings of the benchmark's system d."""


class QASystem(BaseModel):
    """One QA system (see the module docstring). Frozen; unknown keys are refused and a bad
    value raises :class:`~hoprank.errors.ConfigError`.

    * ``kind``: ``pipeline`` (decompose → retrieve → bridge → fuse → rerank) or ``agent``.
    * ``retriever``: ``bm25``, ``dense`` or ``hybrid`` (BM25 + dense, RRF), built in memory
      over the dataset's corpus with ``retriever_params``; ``index``: a saved index folder
      (``hoprank index``) to load instead.
    * ``decompose`` / ``bridge``: the pipeline's decomposition and bridge stage (the bridge
      answers the first sub-question in a few words and searches again with it).
    * ``ranker`` + ``ranker_params``: a :func:`hoprank.rankers.make_ranker` name (None: no
      rerank); it reranks the pipeline's fused top ``pipeline.pool_depth``, or the agent's
      evidence.
    * ``answer``: answer with the :class:`~hoprank.agents.answer.Answerer`
      (``answer_mode``) from the top ``answer_k`` passages of the ranked list.
    * ``pipeline`` / ``agent``: :class:`PipelineConfig` / :class:`MultiHopConfig`.
    * ``prompts``: prompt overrides by role (``decompose``, ``bridge``, ``answer``, ``agent``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    description: str = ""
    kind: Literal["pipeline", "agent"] = "pipeline"
    retriever: Literal["bm25", "dense", "hybrid"] = "bm25"
    index: str | None = None
    retriever_params: dict[str, Any] = Field(default_factory=dict)
    decompose: bool = False
    bridge: bool = False
    ranker: str | None = None
    ranker_params: dict[str, Any] = Field(default_factory=dict)
    answer: bool = True
    answer_mode: Literal["short", "long"] = "short"
    answer_k: int = Field(default=5, ge=1)
    pipeline: PipelineConfig = BENCHMARK_PIPELINE
    agent: MultiHopConfig = BENCHMARK_AGENT
    prompts: dict[PromptRole, str] = Field(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise config_error(e, f"QA system {data.get('name', 'custom')!r}") from e

    @field_validator("ranker", mode="before")
    @classmethod
    def _no_ranker(cls, v: Any) -> Any:
        return None if isinstance(v, str) and v.strip().lower() in ("", "none", "null") else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\,") or v.startswith("."):
            raise ValueError(f"system name {v!r} must be non-empty, without '/', '\\\\' or ','")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> QASystem:
        if self.bridge and not self.decompose and self.kind == "pipeline":
            raise ValueError("bridge needs decompose (it answers the first sub-question)")
        return self

    @property
    def needs_engine(self) -> bool:
        """Whether the system makes LLM calls (an engine must be loaded)."""
        if self.kind == "agent" or self.answer:
            return True
        if self.decompose or self.bridge:
            return True
        if self.ranker is None:
            return False
        from hoprank.rankers import ranker_spec

        return ranker_spec(self.ranker).needs_engine

    def summary(self) -> str:
        """The key parameters in a few words: ``bm25+decompose+bridge+rrf(k=10,w=2)+first@20``."""
        retr = self.retriever if self.index is None else f"index:{Path(self.index).name}"
        rank = ""
        if self.ranker is not None:
            params = ",".join(f"{k}={_short(v)}" for k, v in sorted(self.ranker_params.items()))
            rank = self.ranker + (f"{{{params}}}" if params else "")
        if self.kind == "agent":
            a = self.agent
            parts = [f"agent({a.budget.max_steps} steps,k={a.k})", retr]
            if rank:
                parts.append(rank)
        else:
            p = self.pipeline
            parts = [f"{retr}@{p.k}"]
            if self.decompose:
                parts.append("decompose")
            if self.bridge:
                parts.append("bridge")
            if self.decompose:
                parts.append(f"rrf(k={p.rrf_k},w={p.original_weight:g})")
            if rank:
                parts.append(f"{rank}@{p.pool_depth}")
        if self.answer:
            parts.append(f"answer@{self.answer_k}" + ("" if self.answer_mode == "short" else "(long)"))
        return "+".join(parts)

    @property
    def label(self) -> str:
        """``name (summary)``: how reports and ``hoprank compare`` name the system."""
        return f"{self.name} ({self.summary()})"

    def identity(self) -> dict[str, Any]:
        """What determines the system's outputs (its name and description left out)."""
        return self.model_dump(mode="json", exclude={"name", "description"})


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= 16 else text[:13] + "..."


PRESETS: dict[str, QASystem] = {
    "a": QASystem(name="a", description="single-query BM25", answer=False),
    "b": QASystem(name="b", description="BM25 + FIRST rerank of the top 20", ranker="first"),
    "c0": QASystem(
        name="c0", description="decompose + bridge + per-query BM25 + RRF", decompose=True, bridge=True
    ),
    "c": QASystem(
        name="c",
        description="decompose + bridge + per-query BM25 + RRF + FIRST rerank of the top 20",
        decompose=True,
        bridge=True,
        ranker="first",
    ),
    "d": QASystem(name="d", description="MultiHopAgent (BM25 tool, 4 steps, k=5)", kind="agent"),
}
"""The benchmark's systems (see the module docstring)."""


def preset_names() -> list[str]:
    return list(PRESETS)


def preset(name: str) -> QASystem:
    """The named preset (:class:`ConfigError` naming the presets for an unknown one)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown QA system {name!r}: use a preset ({', '.join(PRESETS)}) or a .yaml/.json file"
        ) from None


def _field_names(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def _resolve_key(system: QASystem, key: str) -> list[str]:
    """The path of an override key in the system's data (shorthands resolved)."""
    path = key.split(".")
    if path[0] in _field_names(QASystem):
        return path
    order = ("pipeline", "agent") if system.kind == "pipeline" else ("agent", "pipeline")
    for section in order:
        cls = PipelineConfig if section == "pipeline" else MultiHopConfig
        if path[0] in _field_names(cls):
            return [section, *path]
    if path[0] in _field_names(Budget):
        return ["agent", "budget", *path]
    raise ConfigError(
        f"unknown QA system parameter {key!r}: a field of QASystem ({', '.join(QASystem.model_fields)}), "
        "of its pipeline or agent config, or a dotted path (pipeline.rrf_k, agent.budget.max_steps)"
    )


def apply_overrides(system: QASystem, overrides: Mapping[str, Any]) -> QASystem:
    """``system`` with ``overrides`` (``{key: value}``, keys as in the module docstring)
    applied and validated again."""
    if not overrides:
        return system
    data = system.model_dump(mode="python")
    for key, value in overrides.items():
        path = _resolve_key(system, key)
        node: Any = data
        for part in path[:-1]:
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            elif isinstance(child, BaseModel):
                child = node[part] = child.model_dump(mode="python")
            elif not isinstance(child, dict):
                raise ConfigError(f"QA system parameter {key!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return QASystem(**data)


def load_system_file(path: str | os.PathLike[str]) -> QASystem:
    """A system from a YAML or JSON file: :class:`QASystem` fields, optionally on top of
    a preset (``preset: c0``); the name defaults to the file's stem."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a QA system file holds a mapping of QASystem fields")
    base_name = data.pop("preset", None)
    data.setdefault("name", p.stem)
    if base_name is None:
        return QASystem(**data)
    base = preset(str(base_name))
    flat = {k: v for k, v in data.items() if k not in ("pipeline", "agent")}
    for section in ("pipeline", "agent"):
        for k, v in _flatten(data.get(section) or {}, section).items():
            flat[k] = v
    return apply_overrides(base, flat)


def _flatten(d: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}"
        if isinstance(v, Mapping) and k == "budget":
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _is_file_spec(item: str) -> bool:
    return item.endswith((".yaml", ".yml", ".json")) or os.sep in item or Path(item).is_file()


def resolve_systems(spec: str | Sequence[str], overrides: Mapping[str, Any] | None = None) -> list[QASystem]:
    """The systems of ``spec``: comma-separated preset names and system files
    (``"a,b,c0,c,d"``, ``"c0,my.yaml"``), each with ``overrides`` applied. An override key
    that starts with one of the systems' names (``c.ranker=icr``) applies to that system
    only; the others apply to every system."""
    items = [s.strip() for s in ([spec] if isinstance(spec, str) else spec) for s in s.split(",")]
    items = [s for s in items if s]
    if not items:
        raise ConfigError("no QA system given (--system a,b,c0,c,d or a .yaml file)")
    systems = [load_system_file(s) if _is_file_spec(s) else preset(s) for s in items]
    names = [s.name for s in systems]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"QA systems named twice: {', '.join(dupes)} (each needs its own run folder)")
    overrides = dict(overrides or {})
    shared = {k: v for k, v in overrides.items() if k.split(".", 1)[0] not in names or "." not in k}
    out = []
    for s in systems:
        own = {
            k.split(".", 1)[1]: v for k, v in overrides.items() if "." in k and k.split(".", 1)[0] == s.name
        }
        out.append(apply_overrides(apply_overrides(s, shared), own))
    return out
