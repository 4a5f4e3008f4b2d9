"""Where a model runs: CUDA with bf16 autocast when present, the CPU in float32 otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` picks the first CUDA GPU when there is one; ``cuda[:N]`` must exist."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was requested but no CUDA GPU is available")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on a GPU that supports it, fp16 on an older GPU, no autocast on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """Mixed precision on the GPU; a no-op on the CPU."""
    dtype = autocast_dtype(device)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
