"""Load a base checkpoint from a local directory, and build the model a stage trains."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, ProcessorMixin, Qwen2VLForConditionalGeneration

from shared_model.adapters import StageAdapter
from shared_model.spec import ModelSpec


def load_base(
    spec: ModelSpec,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> tuple[Qwen2VLForConditionalGeneration, ProcessorMixin]:
    """Model and processor from ``spec.base`` (a local directory, never a hub id), the weights
    in ``dtype`` (:func:`shared_model.device.weights_dtype` picks a site's; ``"auto"``: the
    checkpoint's own)."""
    if not spec.base.is_dir():
        raise FileNotFoundError(
            f"base checkpoint directory {spec.base} does not exist "
            f"(build the tiny one with `fedumit model tiny --out {spec.base}`)"
        )
    model = Qwen2VLForConditionalGeneration.from_pretrained(spec.base, dtype=dtype)
    processor = AutoProcessor.from_pretrained(spec.base)
    return model.to(device).eval(), processor


def merge_stage(
    model: torch.nn.Module,
    spec: ModelSpec,
    stage: str,
    arrays: Mapping[str, np.ndarray],
    fingerprint: str,
    save_adapter_to: Path | None = None,
) -> torch.nn.Module:
    """Attach ``stage``, load its arrays, fold them into the weights; return the plain model.

    With ``save_adapter_to``, the peft adapter is also saved there before merging.
    """
    adapter = StageAdapter.attach(model, spec, stage, fingerprint=fingerprint)
    adapter.load_arrays(arrays, fingerprint)
    if save_adapter_to is not None:
        adapter.save(save_adapter_to)
    return adapter.merged()


def stage_model(
    spec: ModelSpec,
    stage: str,
    *,
    align_arrays: Mapping[str, np.ndarray] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[StageAdapter, ProcessorMixin]:
    """The model a stage trains: ``instruct`` starts from the base with ``align`` merged in."""
    model, processor = load_base(spec, device)
    fingerprint = spec.fingerprint()
    if stage == "instruct" and align_arrays is not None:
        model = merge_stage(model, spec, "align", align_arrays, fingerprint)
    return StageAdapter.attach(model, spec, stage, fingerprint=fingerprint), processor
