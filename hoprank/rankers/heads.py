"""Retrieval-head selection for ICR: score with the attention heads that rank well.

ICR sums the calibrated attention of every layer and head. Most heads do not look at
what is relevant (attention sinks, positional and syntactic heads); a few do
("query-focused retrieval heads", Zhang et al. 2025; Selective-ICR). This module finds
them on a *calibration* dataset with relevance judgments and saves them as a small JSON
file bound to the model's sha256, which ``ICRRanker(heads=NAME)`` loads:

1. :func:`collect_head_scores` runs ICR once per calibration query with per-head rows and
   keeps each passage's calibrated score for every ``(layer, head)``;
2. :func:`select_from_records` ranks the candidates by each head alone, scores every head
   by its mean nDCG@10 over the calibration queries and keeps the best ``k``;
3. :func:`save_selection` / :func:`load_selection` store and find the result under
   ``$HOPRANK_CACHE/heads/<name>.json`` (or any path).

Summing the selected heads' scores is exactly what ``ICRRanker(heads=...)`` ranks by, so
:func:`replay` evaluates a selection on recorded scores without running the model again.
Choose heads on data that is not your evaluation set.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hoprank._fsio import write_text_atomic
from hoprank.errors import ConfigError, InvalidInput
from hoprank.runs import ndcg_at
from hoprank.types import Document

__all__ = [
    "HeadRecord",
    "HeadSelection",
    "collect_head_scores",
    "engine_identity",
    "heads_dir",
    "load_selection",
    "read_records",
    "replay",
    "save_selection",
    "select_from_records",
    "write_records",
]

logger = logging.getLogger(__name__)

#: Heads kept by default: fixed in advance (QRHead's choice for 1-8B models), not tuned.
DEFAULT_K = 16


class HeadRecord(BaseModel):
    """One calibration query: its candidates (first-stage order), their graded
    judgments and every head's calibrated ICR score, shape (docs, layers, heads)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    dataset: str
    qid: str
    doc_ids: list[str]
    qrels: dict[str, int]
    scores: Any  # np.ndarray (docs, layers, heads)


class HeadSelection(BaseModel):
    """A saved head selection, bound to one model by its sha256."""

    name: str
    model: str
    model_sha256: str
    heads: list[tuple[int, int]]
    k: int
    criterion: str = "mean nDCG@10 of the head alone over the calibration queries"
    calibration: list[dict[str, Any]] = Field(default_factory=list)
    head_ndcg: list[float] = Field(default_factory=list)
    all_heads_ndcg: float | None = None
    selected_ndcg: float | None = None
    created: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.model_sha256[:12]}"


def heads_dir() -> Path:
    """``$HOPRANK_HEADS``, else ``$HOPRANK_CACHE/heads`` (default ``~/.cache/hoprank/heads``)."""
    if os.environ.get("HOPRANK_HEADS"):
        return Path(os.environ["HOPRANK_HEADS"]).expanduser()
    root = os.environ.get("HOPRANK_CACHE") or str(Path.home() / ".cache" / "hoprank")
    return Path(root).expanduser() / "heads"


def engine_identity(engine: Any) -> tuple[str, str]:
    """(model name, sha256 or other identity) of an engine, from its ``describe()``."""
    info: dict[str, Any] = dict(engine.describe())
    sha = info.get("gguf_sha256") or info.get("sha256") or info.get("weights_sha256")
    name = str(info.get("model") or engine.name)
    if not sha:
        sha = f"unverified:{name}:{info.get('path', '')}"
    adapter = info.get("adapter")
    if isinstance(adapter, dict) and adapter.get("sha256"):  # a LoRA student is not its base
        sha = f"{sha}+{adapter['sha256']}"
    return name, str(sha)


def _path_for(name_or_path: str) -> Path:
    p = Path(name_or_path).expanduser()
    if p.suffix == ".json" or os.sep in name_or_path:
        return p
    return heads_dir() / f"{name_or_path}.json"


def save_selection(selection: HeadSelection, where: str | None = None) -> Path:
    """Write ``selection`` atomically to ``where`` (a name or a path; default its name)."""
    path = _path_for(where or selection.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, selection.model_dump_json(indent=1))
    return path


def load_selection(name_or_path: str, engine: Any | None = None) -> HeadSelection:
    """Load a saved selection; with ``engine``, refuse one made for another model."""
    path = _path_for(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"no head selection {name_or_path!r} ({path}); make one with `hoprank heads select`"
        )
    try:
        selection = HeadSelection.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigError(f"{path}: not a head selection file: {e}") from e
    if engine is not None:
        _, sha = engine_identity(engine)
        if sha != selection.model_sha256:
            raise ConfigError(
                f"head selection {selection.name!r} was made for model sha256 "
                f"{selection.model_sha256[:16]}..., this engine is {sha[:16]}...; select heads for it"
            )
    return selection


async def collect_head_scores(
    ranker: Any,
    items: Iterable[tuple[str, str, str, Sequence[Document], Mapping[str, int]]],
    *,
    on_record: Callable[[HeadRecord], None] | None = None,
) -> list[HeadRecord]:
    """Per-head ICR scores for each ``(dataset, qid, query, candidates, qrels)`` item.

    ``ranker`` is an :class:`~hoprank.rankers.icr.ICRRanker` (its prompt, calibration and
    layout are the ones the selection will be used with); ``on_record`` sees each record
    as it is made (progress, incremental saving)."""
    out: list[HeadRecord] = []
    for dataset, qid, query, docs, qrels in items:
        scores = await ranker.head_scores(query, docs)
        rec = HeadRecord(
            dataset=dataset, qid=qid, doc_ids=[d.id for d in docs], qrels=dict(qrels), scores=scores
        )
        out.append(rec)
        if on_record is not None:
            on_record(rec)
    return out


def _ndcg10(order: Sequence[str], qrels: Mapping[str, int]) -> float:
    return ndcg_at(order, qrels, 10)


def _order(doc_ids: Sequence[str], scores: np.ndarray) -> list[str]:
    # ties keep the first-stage order, as ICRRanker's sort does
    idx = sorted(range(len(doc_ids)), key=lambda i: (-float(scores[i]), i))
    return [doc_ids[i] for i in idx]


def replay(records: Sequence[HeadRecord], heads: Sequence[Sequence[int]] | None) -> dict[str, float]:
    """nDCG@10 per query of ranking each record by the sum of ``heads`` (None: all)."""
    out: dict[str, float] = {}
    for rec in records:
        s = np.asarray(rec.scores)
        total = s.sum(axis=(1, 2)) if heads is None else sum(s[:, layer, head] for layer, head in heads)
        out[f"{rec.dataset}/{rec.qid}"] = _ndcg10(_order(rec.doc_ids, np.asarray(total)), rec.qrels)
    return out


def _mean(values: Iterable[float]) -> float:
    v = list(values)
    return float(sum(v) / len(v)) if v else 0.0


def select_from_records(
    records: Sequence[HeadRecord], *, k: int = DEFAULT_K, name: str, model: str, model_sha256: str
) -> HeadSelection:
    """Keep the ``k`` heads whose own rankings have the best mean nDCG@10 over ``records``."""
    judged = [r for r in records if any(v > 0 for v in r.qrels.values())]
    if not judged:
        raise InvalidInput("head selection needs calibration queries with at least one relevant passage")
    shapes = {np.asarray(r.scores).shape[1:] for r in judged}
    if len(shapes) != 1:
        raise InvalidInput(f"records disagree on the (layers, heads) shape: {sorted(shapes)}")
    n_layers, n_heads = next(iter(shapes))
    if not 1 <= k <= n_layers * n_heads:
        raise InvalidInput(f"k must be in 1..{n_layers * n_heads}, got {k}")
    per_head = np.zeros((n_layers, n_heads))
    for rec in judged:
        s = np.asarray(rec.scores)
        for layer in range(n_layers):
            for head in range(n_heads):
                per_head[layer, head] += _ndcg10(_order(rec.doc_ids, s[:, layer, head]), rec.qrels)
    per_head /= len(judged)
    flat = sorted(
        ((float(per_head[layer, head]), layer, head) for layer in range(n_layers) for head in range(n_heads)),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    chosen = sorted((layer, head) for _, layer, head in flat[:k])
    datasets: dict[str, int] = {}
    for rec in judged:
        datasets[rec.dataset] = datasets.get(rec.dataset, 0) + 1
    return HeadSelection(
        name=name,
        model=model,
        model_sha256=model_sha256,
        heads=chosen,
        k=k,
        calibration=[{"dataset": d, "queries": n} for d, n in sorted(datasets.items())],
        head_ndcg=[round(v, 4) for v, _, _ in flat[:k]],
        all_heads_ndcg=round(_mean(replay(judged, None).values()), 4),
        selected_ndcg=round(_mean(replay(judged, chosen).values()), 4),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def write_records(records: Iterable[HeadRecord], path: Path) -> None:
    """Append records as JSON lines (scores as nested lists, 7 significant digits)."""
    with open(path, "a", encoding="utf-8") as f:
        for rec in records:
            row = rec.model_dump(exclude={"scores"})
            row["scores"] = np.round(np.asarray(rec.scores), 9).tolist()
            f.write(json.dumps(row) + "\n")


def read_records(path: Path) -> list[HeadRecord]:
    """Records written by :func:`write_records` (a torn last line is skipped)."""
    out: list[HeadRecord] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s: skipping a torn line", path)
                continue
            row["scores"] = np.asarray(row["scores"], dtype=np.float64)
            out.append(HeadRecord.model_validate(row))
    return out
