"""GGUF → transformers conversion and the crash-safe cache helpers behind the packs.

Private to :mod:`hoprank.llm.models.packs`. Everything is written under a temporary name in
its final directory and moved into place with ``os.replace``; a manifest written last
marks a converted folder complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from hoprank._fsio import fsync_dir, write_json_atomic
from hoprank.errors import MissingExtra, ModelPackError

logger = logging.getLogger("hoprank.llm.models.packs")

MANIFEST = "hoprank-manifest.json"
_MANIFEST_FORMAT = 1
_CHUNK = 8 * 1024 * 1024


def cache_dir() -> Path:
    """The cache root: ``$HOPRANK_CACHE`` or ``~/.cache/hoprank``."""
    env = os.environ.get("HOPRANK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hoprank"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(key: str) -> Iterator[None]:
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{key}.lock")):
        yield


def remove_stale_tmp(dest: Path) -> None:
    """Delete temporaries a crashed build left next to ``dest`` (call under the lock)."""
    for p in dest.parent.glob(f".{dest.name}.tmp-*"):
        logger.warning("removing stale temporary %s", p)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_ok(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete converted folder, or None if anything is off."""
    manifest = read_json(folder / MANIFEST)
    if manifest is None or manifest.get("format") != _MANIFEST_FORMAT:
        return None
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return None
    for fname, size in files.items():
        p = folder / fname
        if not p.is_file() or p.stat().st_size != size:
            return None
    return manifest


def convert_gguf(gguf: Path, dest: Path, *, name: str, sha256: str, source: str) -> None:
    """Dequantize ``gguf`` with transformers and save a bf16 safetensors folder at ``dest``."""
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtra("local", e.name) from e

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    t0 = time.perf_counter()
    logger.info("converting %s to a transformers folder (takes 30-60 s)", gguf)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16, local_files_only=True
        )
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.to(torch.bfloat16)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        del model
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "format": _MANIFEST_FORMAT,
            "name": name,
            "source": source,
            "gguf_file": str(gguf),
            "gguf_sha256": sha256,
            "gguf_size": gguf.stat().st_size,
            "dtype": "bfloat16",
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "created": time.time(),
            "files": files,
        }
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        write_json_atomic(tmp / MANIFEST, manifest, sort_keys=True, sync_dir=True)
        if dest.exists():
            logger.warning("replacing incomplete converted folder %s", dest)
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except ModelPackError:
        raise
    except Exception as e:
        raise ModelPackError(f"converting {gguf} with transformers failed: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s in %.1f s: %s", name, time.perf_counter() - t0, dest)


def ensure_converted(dest: Path, key: str, build: Callable[[], None]) -> dict[str, Any]:
    manifest = manifest_ok(dest)
    if manifest is not None:
        return manifest
    with file_lock(key):
        manifest = manifest_ok(dest)
        if manifest is None:
            remove_stale_tmp(dest)
            if dest.exists():
                logger.warning("converted folder %s is incomplete; rebuilding", dest)
            build()
            manifest = manifest_ok(dest)
            if manifest is None:  # pragma: no cover - _convert guarantees it
                raise ModelPackError(f"conversion into {dest} did not produce a complete folder")
    return manifest
