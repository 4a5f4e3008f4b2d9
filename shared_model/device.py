"""Where a model runs: CUDA with bf16 autocast when present, the CPU in float32 otherwise."""

from __future__ import annotations

import contextlib
import os
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


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def weights_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The frozen base's dtype: ``auto`` is :func:`autocast_dtype` on a GPU and float32 on the
    CPU; ``float32`` and ``bfloat16`` are what they say (bfloat16 on a CPU halves the base's
    memory at a large cost in speed where the CPU has no bf16 arithmetic)."""
    if precision == "auto":
        return autocast_dtype(device) or torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not auto, {' or '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def checkpointing_enabled(device: torch.device, setting: str = "auto") -> bool:
    """Gradient checkpointing: ``auto`` on a GPU (memory-bound), off on the CPU (time-bound)."""
    if setting not in ("auto", "true", "false"):
        raise ValueError(f"gradient_checkpointing {setting!r} is not auto, true or false")
    return device.type == "cuda" if setting == "auto" else setting == "true"


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """Mixed precision on the GPU; a no-op on the CPU."""
    dtype = autocast_dtype(device)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def cpu_threads() -> int:
    """Threads for CPU math: ``$FEDUMIT_CPU_THREADS``, else one per two cores (at least one,
    at most eight).

    On a small machine that other work shares, a second thread costs more than it gives: one
    pretraining step of the tiny base (12 records) took 0.24 s with one thread and 2-7 s with
    two on a 2-core machine running two other training processes (each of torch's parallel
    regions waits for its slowest thread, and a thread that is not scheduled stalls them all).
    """
    explicit = os.environ.get("FEDUMIT_CPU_THREADS")
    if explicit:
        return max(1, int(explicit))
    return max(1, min(8, (os.cpu_count() or 1) // 2))


def configure_cpu_threads() -> int:
    """Set torch's intra-op threads to :func:`cpu_threads`; return the number."""
    threads = cpu_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


class OnDevice(torch.nn.Module):
    """``model`` fed its batches on its own device, under the device's autocast (bf16 on a GPU
    that has it), for a training loop that collates on the CPU
    (:func:`shared_model.tiny.build.fit`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: torch.Tensor):
        device = next(self.model.parameters()).device
        with autocast(device):
            return self.model(**{name: value.to(device) for name, value in inputs.items()})
