"""LoRA adapters bound to one base model: a ``.safetensors`` file, merged at load.

An adapter file holds, for each adapted linear layer ``<module>`` of the base model
(``model.layers.0.self_attn.q_proj`` ...), the low-rank factors ``<module>.lora_A``
(``[r, in]``) and ``<module>.lora_B`` (``[out, r]``), fp32, and in the safetensors
header metadata (key ``hoprank_adapter``, JSON) what binds it to its base: the base
model's name and sha256 (:func:`model_sha256`: the GGUF sha256 a pack or a converted
folder reports, else a hash of the folder's weight files), ``r``, ``alpha``, the target
modules, the training configuration and the hoprank version. ``hoprank train first``
writes it (:func:`save_adapter`); the header is read without torch
(:func:`read_adapter_info`).

Loading: ``load_engine("qwen2.5-coder-0.5b+student.safetensors")`` (``<base>+<file>``,
see :func:`split_adapter`), ``TransformersEngine(model, adapter=path)`` or the CLI's
``--engine-param adapter=PATH`` adds ``alpha / r * B @ A`` to each target weight once
(:func:`merge_adapter`), so inference costs what the base costs. A file made for another
base raises :class:`~hoprank.errors.AdapterMismatch` before any weight changes. The
engine's ``name`` becomes ``<base>+<file stem>@<sha256[:12]>`` and its ``describe()``
gains ``"adapter"`` (with the file's full sha256), so run manifests and the LLM-call
cache (keyed by ``describe()``) never mix the student with its base.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hoprank._fsio import write_bytes_atomic
from hoprank._version import __version__
from hoprank.errors import AdapterMismatch, ConfigError
from hoprank.llm.models._convert import sha256_file

if TYPE_CHECKING:
    from hoprank.llm.models.packs import ResolvedModel

__all__ = [
    "ADAPTER_SUFFIX",
    "AdapterInfo",
    "check_adapter",
    "merge_adapter",
    "model_sha256",
    "read_adapter_info",
    "save_adapter",
    "split_adapter",
]

ADAPTER_SUFFIX = ".safetensors"
FORMAT = "hoprank-lora"
FORMAT_VERSION = 1
META_KEY = "hoprank_adapter"
_MAX_HEADER = 100 * 1024 * 1024


def split_adapter(spec: str) -> tuple[str, str | None]:
    """``(base, adapter path)`` of ``"<base>+<path>.safetensors"``; ``(spec, None)`` when
    the part after the last ``+`` is not a ``.safetensors`` path."""
    base, sep, adapter = spec.rpartition("+")
    if sep and base.strip() and adapter.strip().lower().endswith(ADAPTER_SUFFIX):
        return base.strip(), adapter.strip()
    return spec, None


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter file says about itself, and its own sha256."""

    path: Path
    sha256: str
    base_model: str
    base_sha256: str
    r: int
    alpha: float
    targets: tuple[str, ...]
    #: everything recorded in the header (training config, hoprank version, ...)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def scaling(self) -> float:
        """LoRA's ``alpha / r``."""
        return self.alpha / self.r

    def engine_name(self, base: str) -> str:
        """The name of ``base`` with this adapter merged: ``<base>+<stem>@<sha256[:12]>``."""
        return f"{base}+{self.path.stem}@{self.sha256[:12]}"

    def describe(self) -> dict[str, Any]:
        """The identity an engine reports for its merged adapter (no local path: the
        content hash names it)."""
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "base_model": self.base_model,
            "base_sha256": self.base_sha256,
            "r": self.r,
            "alpha": self.alpha,
            "targets": list(self.targets),
        }


def _header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ConfigError(f"{path}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER:
                raise ConfigError(f"{path}: not a safetensors file (header of {n} bytes)")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise ConfigError(f"adapter file {path} not found") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a safetensors file: {e}") from e
    if not isinstance(header, dict):
        raise ConfigError(f"{path}: not a safetensors file (header is not an object)")
    return header


def read_adapter_info(path: str | os.PathLike[str]) -> AdapterInfo:
    """The metadata and sha256 of an adapter file (no torch needed); :class:`ConfigError`
    for a missing file or one that is not a hoprank LoRA adapter."""
    p = Path(path).expanduser()
    meta_raw = (_header(p).get("__metadata__") or {}).get(META_KEY)
    try:
        meta = json.loads(meta_raw) if isinstance(meta_raw, str) else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{p}: not a hoprank LoRA adapter (no {META_KEY!r} metadata)")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ConfigError(f"{p}: adapter format {meta['format_version']} is newer than this hoprank")
    try:
        return AdapterInfo(
            path=p,
            sha256=sha256_file(p),
            base_model=str(meta["base_model"]),
            base_sha256=str(meta["base_sha256"]),
            r=int(meta["r"]),
            alpha=float(meta["alpha"]),
            targets=tuple(str(t) for t in meta["targets"]),
            meta=meta,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{p}: incomplete adapter metadata: {e}") from e


def save_adapter(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    *,
    base_model: str,
    base_sha256: str,
    r: int,
    alpha: float,
    targets: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> AdapterInfo:
    """Write ``tensors`` (``<module>.lora_A`` / ``.lora_B``, torch tensors) and the binding
    metadata (plus ``extra``: training config, steps...) atomically to ``path``."""
    import torch
    from safetensors.torch import save

    meta: dict[str, Any] = {
        **(extra or {}),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base_model": base_model,
        "base_sha256": base_sha256,
        "r": r,
        "alpha": alpha,
        "targets": list(targets),
        "hoprank_version": __version__,
    }
    cpu = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    data: bytes = save(cpu, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(p, data)
    return AdapterInfo(
        path=p,
        sha256=hashlib.sha256(data).hexdigest(),
        base_model=base_model,
        base_sha256=base_sha256,
        r=r,
        alpha=alpha,
        targets=tuple(targets),
        meta=meta,
    )


def model_sha256(resolved: ResolvedModel) -> str:
    """The sha256 that identifies a loaded base model: its GGUF sha256 (packs, converted
    ``.gguf`` files and folders with a hoprank manifest), else a sha256 over the names and
    sha256s of the folder's weight files."""
    if resolved.gguf_sha256:
        return resolved.gguf_sha256
    files = sorted(p for pat in ("*.safetensors", "*.bin") for p in resolved.path.glob(pat))
    if not files:
        raise ConfigError(f"{resolved.path}: no weight files to identify the base model by")
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def check_adapter(path: str | os.PathLike[str], base_sha256: str) -> AdapterInfo:
    """The adapter's info; :class:`AdapterMismatch` unless it was made for the base model
    of sha256 ``base_sha256`` (no torch needed: a foreign file is refused before a model
    loads)."""
    info = read_adapter_info(path)
    if info.base_sha256 != base_sha256:
        raise AdapterMismatch(
            f"adapter {info.path.name} was trained on {info.base_model} (sha256 {info.base_sha256[:16]}...), "
            f"this base model is sha256 {base_sha256[:16]}...; load it on its own base",
            expected=info.base_sha256,
            actual=base_sha256,
        )
    return info


def merge_adapter(model: Any, path: str | os.PathLike[str], *, base_sha256: str) -> AdapterInfo:
    """Add the adapter's ``alpha / r * B @ A`` to each target weight of ``model`` (a torch
    module, in place). :class:`AdapterMismatch` when the file was made for another base
    (:func:`check_adapter`, first) or names a layer or shape ``model`` does not have
    (checked for every layer before any weight changes)."""
    info = check_adapter(path, base_sha256)
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(info.path))
    plan = []
    for key in sorted(k for k in tensors if k.endswith(".lora_A")):
        name = key.removesuffix(".lora_A")
        a, b = tensors[key], tensors.get(f"{name}.lora_B")
        try:
            weight = model.get_submodule(name).weight
        except AttributeError:
            weight = None
        if b is None or weight is None or tuple(weight.shape) != (b.shape[0], a.shape[1]):
            raise AdapterMismatch(f"adapter {info.path.name}: layer {name} does not fit this model")
        plan.append((weight, a, b))
    if not plan:
        raise ConfigError(f"adapter {info.path.name} holds no LoRA weights")
    with torch.no_grad():
        for weight, a, b in plan:
            delta = (b.to(weight.device, torch.float32) @ a.to(weight.device, torch.float32)) * info.scaling
            weight.copy_((weight.float() + delta).to(weight.dtype))
    return info
