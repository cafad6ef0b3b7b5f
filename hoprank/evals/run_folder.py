"""A run folder on disk: its manifest, resume checks, results log and outputs.

:class:`RunFolder` owns every rule about what an existing folder may be reused for: a
folder holding another experiment (config fingerprint) is refused, one started on other
inputs (prompt text, dataset content, model weights) too. ``overwrite`` starts the
experiment over: the folder's outputs are removed and nothing is resumed. Nothing is
created or removed on disk until :meth:`RunFolder.prepare` (called once the run's inputs
are validated), so a run that fails on its inputs leaves no folder behind and leaves an
existing one as it was. The manifest is always rewritten whole and atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hoprank._fsio import write_json_atomic
from hoprank.errors import ConfigError
from hoprank.evals.results import ResultsLog

__all__ = ["OUTPUTS", "RunFolder", "model_sha256"]

OUTPUTS = (
    "results.jsonl",
    "questions.jsonl",
    "run.trec",
    "traces.jsonl",
    "metrics.json",
    "report.md",
    "metrics.png",
    "quality_latency.png",
)
"""What a run writes next to ``manifest.json`` (``overwrite`` removes them all)."""


def model_sha256(desc: dict[str, Any] | None) -> str | None:
    """The weights' sha256 an engine description reports (under any of its usual keys),
    with ``+<adapter sha256>`` for a merged LoRA adapter (a retrained student is another
    model)."""
    if not desc:
        return None
    adapter = desc.get("adapter")
    extra = f"+{adapter['sha256']}" if isinstance(adapter, dict) and adapter.get("sha256") else ""
    for k in ("sha256", "gguf_sha256", "model_sha256"):
        if desc.get(k):
            return str(desc[k]) + extra
    return None


def _changed_inputs(
    old: dict[str, Any] | None, prompt: dict[str, Any] | None, data_hash: str, model_sha: str | None
) -> str:
    """What differs between a run folder's manifest and this run: the prompt's text, the
    dataset's content or the model's weights (the config fingerprint names them, this
    checks their bytes)."""
    if old is None:
        return ""
    diffs = []
    old_prompt = old.get("prompt") or {}
    if prompt is not None and old_prompt.get("hash") not in (None, prompt["hash"]):
        diffs.append(f"prompt {old_prompt.get('ref')}, now {prompt['ref']}: its text changed")
    old_hash = (old.get("dataset") or {}).get("hash")
    if old_hash not in (None, data_hash):
        diffs.append(f"dataset content {old_hash} != {data_hash}")
    old_sha = old.get("model_sha256")
    if old_sha is not None and model_sha is not None and old_sha != model_sha:
        diffs.append(f"model weights sha256 {old_sha[:12]} != {model_sha[:12]}")
    return "; ".join(diffs)


class RunFolder:
    """The folder ``path`` for the experiment whose config fingerprint is ``fingerprint``.

    Opening it only reads: an earlier manifest (:attr:`previous`), and a folder of
    another experiment is refused unless ``overwrite``. :meth:`prepare` then creates the
    folder (or, with ``overwrite``, clears its outputs: the experiment starts over)."""

    def __init__(self, path: str | os.PathLike[str], fingerprint: str, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.manifest_path = self.path / "manifest.json"
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is not a folder; use another output folder")
        old = self._read_manifest() if not overwrite else None
        if old is not None and old.get("fingerprint") != fingerprint:
            raise ConfigError(
                f"{self.path} holds a different experiment (fingerprint {old.get('fingerprint')} != "
                f"{fingerprint}); use another output folder or overwrite"
            )
        self.previous = old
        """The manifest of an earlier attempt at this experiment (None: a fresh run, or
        ``overwrite``)."""

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise ConfigError(
                f"{self.manifest_path}: unreadable manifest ({e}); remove the folder or pass overwrite"
            ) from e
        return data if isinstance(data, dict) else None

    def clear(self) -> None:
        """Remove the outputs and the manifest (start over); other files stay."""
        for name in (*OUTPUTS, "manifest.json"):
            (self.path / name).unlink(missing_ok=True)

    def check_inputs(self, prompt: dict[str, Any] | None, data_hash: str, model_sha: str | None) -> None:
        """Refuse to resume on other inputs than the earlier attempt's (with ``overwrite``
        there is no earlier attempt: the run starts over)."""
        changed = _changed_inputs(self.previous, prompt, data_hash, model_sha)
        if changed:
            raise ConfigError(
                f"{self.path} was started on other inputs ({changed}); its results would mix with "
                "this run's; use another output folder or overwrite"
            )

    def prepare(self) -> None:
        """Make the folder ready for this run, once its inputs are validated: create it,
        and with ``overwrite`` remove the outputs of any earlier run (start over)."""
        os.makedirs(self.path, exist_ok=True)
        if self.overwrite:
            self.clear()

    def results(self) -> ResultsLog:
        """The append-only per-query results log (the source of truth for resuming)."""
        return ResultsLog(self.path / "results.jsonl")

    def attempts(self, attempt: dict[str, Any]) -> list[dict[str, Any]]:
        """The earlier attempts' records followed by ``attempt``."""
        return [*(self.previous or {}).get("attempts", []), attempt]

    @contextlib.contextmanager
    def attempt(self, manifest: dict[str, Any], attempt: dict[str, Any]) -> Iterator[None]:
        """Run an attempt: when it raises (a failure, Ctrl-C, a SIGTERM turned into
        Ctrl-C by the command line), the attempt records when and why, the manifest says
        ``failed`` and the error goes on; what finished stays in ``results.jsonl`` for a
        resume. On success ``attempt`` gets ``finished_at`` and ``seconds``."""
        t0 = time.perf_counter()
        try:
            yield
        except BaseException as e:
            # Ctrl-C inside asyncio.run reaches the run as a cancellation
            stop = isinstance(e, KeyboardInterrupt | asyncio.CancelledError)
            error = f"interrupted ({type(e).__name__})" if stop else repr(e)
            attempt.update(finished_at=time.time(), seconds=time.perf_counter() - t0, error=error)
            manifest["status"] = "failed"
            self.write_manifest(manifest)
            raise
        attempt.update(finished_at=time.time(), seconds=time.perf_counter() - t0)

    def started_at(self, default: float) -> float:
        """When the first attempt started (``default`` for a fresh run)."""
        return float((self.previous or {}).get("started_at", default))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Rewrite ``manifest.json`` whole, atomically."""
        write_json_atomic(self.manifest_path, manifest, default=str)

    def outputs(self) -> list[str]:
        """The files in the folder (hidden temporaries left out)."""
        return sorted(n for n in os.listdir(self.path) if not n.startswith("."))
