"""The append-only per-query results log (``results.jsonl``) that makes runs resumable.

One JSON line per finished query, written with a single ``write`` followed by
``flush`` and ``fsync``. A run killed mid-write leaves at most one torn last line:
:meth:`ResultsLog.load` detects it (no trailing newline, or unparseable JSON on the
last line), truncates the file back to the last complete line and reports the qids
already done, so a restarted run skips exactly those.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from hoprank.errors import HoprankError
from hoprank.types import Ranking

__all__ = ["ResultsLog", "cache_fields", "make_record"]

logger = logging.getLogger(__name__)


def cache_fields(hits: int, misses: int) -> dict[str, Any]:
    """A results line's LLM-cache counts, and ``cached``: some call was replayed, so the
    line's seconds are not a measurement (ranker queries and QA questions alike)."""
    return {"cache": {"hits": hits, "misses": misses}, "cached": hits > 0}


def make_record(
    qid: str,
    ranking: Ranking,
    *,
    n_candidates: int,
    answer: str | None = None,
    hits: int = 0,
    misses: int = 0,
) -> dict[str, Any]:
    """The results line of one query: ranked ids (+ the ranker's scores), cost, how many
    LLM calls came from the cache (``cached``: any did, so its seconds are not measured)
    and trace."""
    rec: dict[str, Any] = {
        "qid": qid,
        "ranked": [[d.id, d.score] for d in ranking.documents],
        "n_candidates": n_candidates,
        "usage": ranking.usage.model_dump(mode="json"),
        "fallbacks": ranking.fallbacks,
        **cache_fields(hits, misses),
        "trace": [s.model_dump(mode="json") for s in ranking.trace],
    }
    if answer is not None:
        rec["answer"] = answer
    return rec


class ResultsLog:
    """``results.jsonl`` of a run folder. Thread-safe appends; crash-tolerant loading."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self) -> dict[str, dict[str, Any]]:
        """Completed records by qid, after discarding a torn last line (the file is repaired).

        A malformed line that is not the last one means the file was edited or corrupted
        otherwise: that raises :class:`HoprankError` naming the line.
        """
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1  # bytes up to the last complete line
        lines = data[:good_end].split(b"\n")[:-1] if good_end else []
        records: dict[str, dict[str, Any]] = {}
        for i, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                qid = rec["qid"]
            except (ValueError, KeyError, TypeError) as e:
                if i == len(lines) and good_end == len(data):
                    logger.warning("%s:%d: discarding an unreadable last line (%s)", self.path, i, e)
                    good_end -= len(raw) + 1
                    break
                raise HoprankError(f"{self.path}:{i}: corrupted results line: {e}") from e
            if qid in records:
                logger.warning("%s:%d: duplicate result for query %r; keeping the first", self.path, i, qid)
                continue
            records[qid] = rec
        if good_end < len(data):
            logger.warning(
                "%s: discarding %d bytes of a partially written last line", self.path, len(data) - good_end
            )
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Append one record durably (one write, flush, fsync)."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def clear(self) -> None:
        with self._lock:
            self.path.unlink(missing_ok=True)
