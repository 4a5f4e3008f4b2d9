"""Load a base checkpoint from a local directory, and build the model a stage trains."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoProcessor,
    ProcessorMixin,
    Qwen2VLForConditionalGeneration,
)

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


def stage_parameter_count(spec: ModelSpec, stage: str) -> int:
    """The parameters ``stage`` trains over ``spec``'s base (the dimensions DP noise lies in
    without a gradient subspace), counted on the base's architecture built on the meta device:
    no weights are read, so a 2B checkpoint costs what the tiny one does."""
    config = AutoConfig.from_pretrained(spec.base)
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(config)
    adapter = StageAdapter.attach(
        model, spec, stage, fingerprint="counted only", init_lora_weights=False
    )  # no weights to fingerprint, and the adapter is never trained or sent
    return sum(parameter.numel() for _, parameter in adapter.trainable_parameters())
