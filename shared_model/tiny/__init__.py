"""The embedded default base: a tiny, pretrained, random-init Qwen2-VL built on this machine."""

from __future__ import annotations

from pathlib import Path

from shared_model.spec import LANGUAGE_TARGETS, LoraSpec, ModelSpec, write_spec_beside
from shared_model.spec import SPEC_FILE as SPEC_FILE  # re-exported: sites and tests name it here

TINY_CANVAS = 56
TINY_SLICES = 4


MERGER_TARGETS = r".*visual\.merger\.mlp\.(0|2)"
"""The patch merger's two linear layers (the projector from vision into the language model)."""
INSTRUCT_TARGETS = f"({LANGUAGE_TARGETS})|({MERGER_TARGETS})"


def tiny_spec(base: str | Path) -> ModelSpec:
    """The model spec that goes with a tiny base in ``base``.

    Few trainable parameters, because DP noise grows with their number (``sqrt(d)``) while the
    signal does not: rank-4 LoRA on the patch merger for ``align`` (6.7 k parameters; the
    merger itself, 330 k, stays frozen), and for ``instruct`` rank-4 LoRA on every
    language-model projection and on the merger again (36 k), where the former layout trained
    445 k and 657 k parameters, the merger in full in both stages. The merger's LoRA in
    ``instruct`` is what lets the image reach the answer: on PneumoniaMNIST (1,300 training
    images, 75 steps of 64 without DP), language-model LoRA alone learned the majority class
    (test AUC 0.54), with the merger's LoRA beside it AUC 0.71.

    ``A`` trains as well (``frozen_a`` off). Frozen, it was measured in the main job
    (``fedumit simulate``, seed 0, epsilon 8; this layout: closed VQA 0.61 en, 0.53 zh,
    detection mean IoU 0.13 en, English report BLEU-1 0.087): at ``instruct`` 3e-3 it learned
    less (closed VQA 0.40 en, 0.12 zh); at 1e-2 English closed VQA ended at 0.74, above the
    majority answer (0.63) beyond its interval, Chinese at 0.59 (the majority answer), but
    boxes drifted off target (mean IoU 0.04) and BLEU-1 rose less (0.062); at seed 1 closed VQA
    ended where this layout's does (0.68 en, 0.49 zh) and BLEU-1 did not rise at all.
    """
    return ModelSpec(
        base=Path(base),
        align=LoraSpec(rank=4, alpha=8.0, target_modules=MERGER_TARGETS, modules_to_save=()),
        instruct=LoraSpec(rank=4, alpha=8.0, target_modules=INSTRUCT_TARGETS, modules_to_save=()),
        canvas=TINY_CANVAS,
        volume_slices=TINY_SLICES,
        max_text_length=384,
    )


def ensure_tiny_base(directory: str | Path | None = None, progress: bool = True) -> Path:
    """The tiny base: in ``directory`` (built there unless a complete one is already there),
    or, by default, from the user-level cache (:mod:`shared_model.tiny.cache`: built once per
    machine and build recipe).

    The directory also gets ``fedumit-model.toml``, the model spec sites point their
    ``[model] spec`` at (rewritten when the spec of this code differs, which needs no rebuild).
    """
    from shared_model.tiny.build import build_tiny_base
    from shared_model.tiny.cache import cached_tiny_base

    if directory is None:
        directory = cached_tiny_base(progress=progress)
    directory = Path(directory)
    if not ((directory / "config.json").is_file() and any(directory.glob("*.safetensors"))):
        build_tiny_base(directory, progress=progress)
    write_spec_beside(tiny_spec(directory), directory)
    return directory
