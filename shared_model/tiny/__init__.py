"""The embedded default base: a tiny, pretrained, random-init Qwen2-VL built on this machine."""

from __future__ import annotations

from pathlib import Path

from shared_model.spec import VISION_BLOCK_TARGETS, LoraSpec, ModelSpec

TINY_CANVAS = 112
TINY_SLICES = 4


def tiny_spec(base: str | Path) -> ModelSpec:
    """The model spec that goes with a tiny base in ``base``."""
    return ModelSpec(
        base=Path(base),
        align=LoraSpec(rank=8, alpha=16.0, target_modules=VISION_BLOCK_TARGETS),
        instruct=LoraSpec(rank=16, alpha=32.0),
        canvas=TINY_CANVAS,
        volume_slices=TINY_SLICES,
        max_text_length=384,
    )


SPEC_FILE = "fedumit-model.toml"


def ensure_tiny_base(directory: str | Path, progress: bool = True) -> Path:
    """Build the tiny base in ``directory`` unless a complete one is already there.

    The directory also gets ``fedumit-model.toml``, the model spec sites point their
    ``[model] spec`` at.
    """
    from shared_model.tiny.build import build_tiny_base

    directory = Path(directory)
    if not ((directory / "config.json").is_file() and any(directory.glob("*.safetensors"))):
        build_tiny_base(directory, progress=progress)
    if not (directory / SPEC_FILE).is_file():
        tiny_spec(directory).write_toml(directory / SPEC_FILE, base_relative_to=directory)
    return directory
