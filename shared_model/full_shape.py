"""``fedumit model full-shape``: a random-init base of Qwen2-VL-2B-Instruct's exact shape.

It exists to test shapes, memory and speed, never answers: the weights are seeded random
numbers, so every answer it gives is noise. The architecture is Qwen2-VL-2B-Instruct's published
configuration (language model 1536 wide, 28 layers, 12 heads / 2 KV heads, 8960 intermediate,
vocabulary 151,936, tied embeddings; vision tower 32 blocks of 1280 with 16 heads, patch 14,
spatial merge 2, temporal patch 2; multimodal RoPE with theta 1e6 and sections 16/24/24).

The weights are written in bfloat16, like the published checkpoint (4.4 GB on disk rather than
8.8 GB in float32): the bytes, the safetensors header and the load path are those a hospital's
real checkpoint has. On the CPU :func:`shared_model.loading.load_base` upcasts to float32; on a
GPU it stays in bfloat16. The tokenizer is the tiny base's bilingual one with its vocabulary
padded by unreachable ``<|reserved_N|>`` entries to the real 151,936, so every id the model can
emit decodes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen2Tokenizer, Qwen2VLConfig
from transformers import Qwen2VLForConditionalGeneration as Qwen2VL

from shared_model.spec import (
    LANGUAGE_TARGETS,
    VISION_BLOCK_TARGETS,
    LoraSpec,
    ModelSpec,
    write_spec_beside,
)

PURPOSE = (
    "Random-init base of Qwen2-VL-2B-Instruct's architecture: it exists to test shapes, "
    "memory and speed. Its weights are seeded random numbers; its answers are noise."
)
MERGER_TARGETS = r".*visual\.merger\.mlp\.(0|2)"
"""The patch merger's two linear layers (the projector from vision into the language model)."""
FULL_SHAPE_CANVAS = 448
"""448 pixels: 32 x 32 patches, 256 visual tokens an image."""
FULL_SHAPE_SLICES = 32
"""A 3D series of 32 slices: 16 temporal patches."""


@dataclass(frozen=True)
class FullShape:
    """Qwen2-VL-2B-Instruct's published configuration values (``config.json`` of the release).

    ``text_layers`` and ``vision_depth`` may be lowered for a depth-truncated copy (the
    benchmark measures per-layer costs on one); every width stays the real one.
    """

    text_hidden: int = 1536
    text_layers: int = 28
    text_heads: int = 12
    text_kv_heads: int = 2
    text_intermediate: int = 8960
    vocab_size: int = 151_936
    max_position_embeddings: int = 32_768
    rope_theta: float = 1_000_000.0
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    vision_depth: int = 32
    vision_embed: int = 1280
    vision_heads: int = 16
    vision_mlp_ratio: int = 4
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    seed: int = 0

    def truncated(self, text_layers: int, vision_depth: int) -> FullShape:
        """The same widths with fewer layers (for per-layer measurements)."""
        return replace(self, text_layers=text_layers, vision_depth=vision_depth)


def full_shape_config(shape: FullShape, tokenizer) -> Qwen2VLConfig:
    """The Qwen2-VL config of ``shape`` whose special-token ids match ``tokenizer``."""
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }
    return Qwen2VLConfig(
        text_config={
            "hidden_size": shape.text_hidden,
            "intermediate_size": shape.text_intermediate,
            "num_hidden_layers": shape.text_layers,
            "num_attention_heads": shape.text_heads,
            "num_key_value_heads": shape.text_kv_heads,
            "vocab_size": shape.vocab_size,
            "max_position_embeddings": shape.max_position_embeddings,
            "rms_norm_eps": shape.rms_norm_eps,
            "hidden_act": "silu",
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": shape.rope_theta,
                "mrope_section": list(shape.mrope_section),
            },
            "bos_token_id": None,
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": shape.tie_word_embeddings,
        },
        vision_config={
            "depth": shape.vision_depth,
            "embed_dim": shape.vision_embed,
            "num_heads": shape.vision_heads,
            "mlp_ratio": shape.vision_mlp_ratio,
            "hidden_size": shape.text_hidden,
            "patch_size": shape.patch_size,
            "spatial_merge_size": shape.spatial_merge_size,
            "temporal_patch_size": shape.temporal_patch_size,
        },
        tie_word_embeddings=shape.tie_word_embeddings,
        **ids,
    )


def padded_tokenizer(vocab_size: int, seed: int = 0) -> Qwen2Tokenizer:
    """The tiny base's bilingual tokenizer with its vocabulary padded to ``vocab_size`` by
    ``<|reserved_N|>`` entries that no merge produces (they only decode)."""
    from shared_model.tiny.tokenizer import SPECIAL_TOKENS, train_bilingual_tokenizer

    trained = train_bilingual_tokenizer(seed=seed)
    model = json.loads(trained.backend_tokenizer.to_str())["model"]
    vocab = dict(model["vocab"])
    for index in range(vocab_size - len(trained)):
        vocab[f"<|reserved_{index}|>"] = len(trained) + index
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    tokenizer.model_max_length = 32768
    if len(tokenizer) != vocab_size:
        raise RuntimeError(f"padded tokenizer has {len(tokenizer)} entries, not {vocab_size}")
    return tokenizer


def full_shape_model(shape: FullShape, tokenizer, dtype: torch.dtype) -> Qwen2VL:
    """A seeded random-init model of ``shape``, built directly in ``dtype`` (one copy)."""
    torch.manual_seed(shape.seed)
    config = full_shape_config(shape, tokenizer)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = Qwen2VL(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=16,
    )
    return model.eval()


def build_full_shape_base(
    out: str | Path, shape: FullShape | None = None, progress: bool = True
) -> Path:
    """Write a full-shape base (bf16 safetensors, tokenizer, processor, model card) to ``out``."""
    from shared_model.tiny.build import tiny_processor

    shape = shape or FullShape()
    out = Path(out)
    tokenizer = padded_tokenizer(shape.vocab_size, seed=shape.seed)
    if progress:
        print(f"initialising {PURPOSE.split(':')[0].lower()} (seed {shape.seed}) in bfloat16")
    model = full_shape_model(shape, tokenizer, torch.bfloat16)
    model.config.fedumit_purpose = PURPOSE
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    del model
    tiny_processor(tokenizer, FULL_SHAPE_CANVAS).save_pretrained(out)
    (out / "README.md").write_text(_model_card(shape), encoding="utf-8")
    return out


def full_shape_spec(
    base: str | Path,
    *,
    canvas: int = FULL_SHAPE_CANVAS,
    volume_slices: int = FULL_SHAPE_SLICES,
    rank: int = 16,
) -> ModelSpec:
    """The model spec of a full-shape base: rank-16 LoRA (alpha 32) on every vision block's
    projections and the merger for ``align``, on every language-model projection and the merger
    for ``instruct`` (no full-weight module: the merger alone is 34 M parameters)."""
    visual = f"({VISION_BLOCK_TARGETS})|({MERGER_TARGETS})"
    language = f"({LANGUAGE_TARGETS})|({MERGER_TARGETS})"
    tokens = volume_slices // 2 * (canvas // 28) ** 2
    return ModelSpec(
        base=Path(base),
        align=LoraSpec(rank=rank, alpha=2.0 * rank, target_modules=visual, modules_to_save=()),
        instruct=LoraSpec(rank=rank, alpha=2.0 * rank, target_modules=language, modules_to_save=()),
        canvas=canvas,
        volume_slices=volume_slices,
        max_text_length=max(512, tokens + 512),
    )


def recipe_key(shape: FullShape) -> str:
    """A short hash of what decides a full-shape base's bytes (shape, this code, libraries)."""
    from shared_model.tiny.cache import recipe_digest

    here = Path(__file__).parent
    return recipe_digest(asdict(shape), [here / "full_shape.py", here / "tiny" / "tokenizer.py"])


def ensure_full_shape_base(
    directory: str | Path | None = None, shape: FullShape | None = None, progress: bool = True
) -> Path:
    """The full-shape base in ``directory``, or by default in the user-level cache
    (``$FEDUMIT_CACHE/full-shape-base/<recipe>``), built there on first use; with its
    ``fedumit-model.toml``."""
    from shared_model.tiny.cache import _locked, cache_root

    shape = shape or FullShape()
    if directory is None:
        directory = cache_root() / "full-shape-base" / recipe_key(shape)
    directory = Path(directory)
    if not _complete(directory):
        directory.parent.mkdir(parents=True, exist_ok=True)
        with _locked(directory.with_name(directory.name + ".lock")):
            if not _complete(directory):
                partial = directory.with_name(directory.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                build_full_shape_base(partial, shape, progress=progress)
                shutil.rmtree(directory, ignore_errors=True)
                partial.rename(directory)
    write_spec_beside(full_shape_spec(directory), directory)
    return directory


def _complete(directory: Path) -> bool:
    return (directory / "README.md").is_file() and any(directory.glob("*.safetensors"))


def _model_card(shape: FullShape) -> str:
    lines = [
        "# FedUMIT full-shape base (random weights)",
        "",
        PURPOSE,
        "",
        "Do not evaluate, deploy or fine-tune it: nothing was learned. Use it to check that",
        "a site's GPU and FedUMIT's code handle the real model's shapes, memory and speed.",
        "",
        "Shape (Qwen2-VL-2B-Instruct's published configuration):",
        "",
        *(f"- {key}: {value}" for key, value in asdict(shape).items()),
        "",
        "Weights: bfloat16 safetensors, as the published checkpoint. Tokenizer: a small bilingual",
        "BPE padded with unreachable reserved entries to the real vocabulary size.",
        "",
    ]
    return "\n".join(lines)
