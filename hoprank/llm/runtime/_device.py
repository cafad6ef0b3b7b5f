"""Device and dtype choice for the in-process engines (torch imported lazily)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hoprank.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["choose_device", "choose_dtype", "cpu_supports_bf16", "sdpa_backends"]

_DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when /proc/cpuinfo lists native bf16 (avx512_bf16 or amx_bf16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def choose_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when available, else ``"cpu"``; anything else as given."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return device


def choose_dtype(dtype: Any, device: str) -> torch.dtype:
    """``"auto"`` → bf16 on CUDA or on a CPU with native bf16, else fp32."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    try:
        out: torch.dtype = getattr(torch, _DTYPES[str(dtype).lower()])
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32") from None
    return out


def sdpa_backends(names: Sequence[str] | None) -> tuple[Any, ...] | None:
    """``["flash", "efficient", "math"]`` -> the torch ``SDPBackend`` members, in that
    priority order (``None``: torch's own choice). They are applied with torch's
    ``sdpa_kernel``, whose flags are process-wide while an engine call runs: another
    torch model running on another thread at that moment sees them too."""
    if names is None:
        return None
    if isinstance(names, str):  # "flash,efficient,math"
        names = [n for n in names.split(",") if n.strip()]
    from torch.nn.attention import SDPBackend

    known = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    wanted = [str(n).strip().lower() for n in names]
    bad = [n for n in wanted if n not in known]
    if bad or not wanted:
        raise ConfigError(f"sdpa_backends: unknown {bad or 'empty list'}; choose from {sorted(known)}")
    import inspect

    from torch.nn.attention import sdpa_kernel

    if "set_priority" not in inspect.signature(sdpa_kernel).parameters:
        raise ConfigError("sdpa_backends needs torch >= 2.6 (sdpa_kernel(..., set_priority=True))")
    return tuple(known[n] for n in dict.fromkeys(wanted))
