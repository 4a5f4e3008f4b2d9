"""A memory model of one training step: peak accelerator memory from the batch, its tokens and
the adapter layout, counted from the architecture (no fitted constant).

Terms (bytes):

- ``weights``: every base parameter at the weights' dtype (bf16 on a GPU, fp32 on the CPU).
- ``trainable``: the adapter in float32 with its gradient and AdamW's two moments.
- ``text_activations``: per decoder layer and token, the tensors autograd keeps (layer input,
  the normed input, q and its rotary copy, k and v with theirs, attention output, the second
  norm's input and output, gate, up, SiLU input and output, their product): ``8 H + 4 KV + 5 I``
  values. With gradient checkpointing every layer keeps only its input (``H``), and one layer's
  full set lives during its recomputation.
- ``vision_activations``: per vision block and patch, ``11 E + 16 E`` values likewise (norms,
  qkv, rotary q and k, attention output, MLP of ``4 E`` with QuickGELU); only in ``align``,
  where the blocks carry LoRA (in ``instruct`` the tower runs without a graph: one block's
  residual stream and MLP, ``10 E``, live at once). The merger keeps ``5 E`` a patch in both stages.
- ``logits``: the answer window only (``answer_window`` positions x vocabulary), kept in the
  compute dtype, its float32 copy and the log-softmax gradient.
- ``per_sample``: DP only: the micro-batch's per-sample gradients and per-unit sums, two
  float32 copies of the adapter per row (bounded by the physical batch, not the logical one).

- ``text_backward``: while a decoder layer's backward runs, the gradients of its MLP
  intermediates and of the LoRA branches that end in the intermediate width (``5 I`` a token).

On a GPU attention is memory-efficient (flash / fused SDPA: no ``tokens^2`` term). On the CPU,
the language model's attention (it has a padding mask) takes SDPA's math path, which keeps each
``heads x tokens^2`` matrix, its softmax and their gradient: ``attention_matrices=True`` adds
them for one layer. The vision tower's attention has no mask and stays fused on the CPU too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared_model.full_shape import FullShape

GIB = 1024**3


@dataclass(frozen=True)
class StepShape:
    """One physical batch: ``rows`` records of ``tokens`` tokens each (visual tokens included)
    and ``patches`` vision patches each (4 per visual token)."""

    rows: int
    tokens: int
    patches: int
    answer_window: int = 32


def base_parameters(shape: FullShape) -> int:
    """Parameters of the base model (tied embeddings counted once)."""
    h, i, kv = shape.text_hidden, shape.text_intermediate, _kv(shape)
    layer = 2 * h * h + 2 * h * kv + h + 2 * kv + 3 * h * i + 2 * h
    text = (
        shape.vocab_size * h * (1 if shape.tie_word_embeddings else 2) + shape.text_layers * layer
    )
    e = shape.vision_embed
    block = 3 * e * e + 3 * e + e * e + e + 2 * (e * 4 * e) + 4 * e + e + 4 * e
    patch = 3 * shape.temporal_patch_size * shape.patch_size**2 * e
    merged = e * shape.spatial_merge_size**2
    merger = e * 2 + merged * merged + merged + merged * h + h
    return text + h + shape.vision_depth * block + patch + merger


def lora_parameters(shape: FullShape, target_modules: str, rank: int) -> int:
    """LoRA parameters ``rank * (in + out)`` over every linear layer ``target_modules`` matches
    (names as in transformers' Qwen2-VL)."""
    pattern = re.compile(target_modules)
    return sum(
        rank * (fan_in + fan_out)
        for name, fan_in, fan_out in _linears(shape)
        if pattern.fullmatch(name)
    )


def predict_peak(
    shape: FullShape,
    stage: str,
    step: StepShape,
    *,
    trainable: int,
    dp: bool,
    checkpointing: bool,
    weight_bytes: int,
    activation_bytes: int,
    attention_matrices: bool = False,
) -> dict[str, float]:
    """Each term of the peak (bytes) and their ``total``."""
    h, i, kv, e = shape.text_hidden, shape.text_intermediate, _kv(shape), shape.vision_embed
    tokens = step.rows * step.tokens
    patches = step.rows * step.patches
    text_layer = (8 * h + 4 * kv + 5 * i) * activation_bytes
    # while a layer's backward runs: gradients of the MLP intermediates (gate, up, SiLU) and
    # of the two LoRA branches that end in the intermediate width
    text_backward = 5 * i * activation_bytes
    if checkpointing:
        text = tokens * (shape.text_layers * h * activation_bytes + text_layer + text_backward)
    else:
        text = tokens * (shape.text_layers * text_layer + text_backward)
    vision_block = 27 * e * activation_bytes
    if stage == "align":
        kept = shape.vision_depth * e * activation_bytes + vision_block if checkpointing else None
        vision = patches * (kept if kept is not None else shape.vision_depth * vision_block)
    else:
        vision = patches * 10 * e * activation_bytes  # no graph: one block's MLP at a time
    vision += patches * 5 * e * activation_bytes
    if attention_matrices:
        text_scores = step.rows * shape.text_heads * step.tokens**2 * 3
        layers = 1 if checkpointing else shape.text_layers
        text += layers * text_scores * activation_bytes
    logits = step.rows * step.answer_window * shape.vocab_size * (activation_bytes + 4 + 4)
    terms = {
        "weights": float(base_parameters(shape) * weight_bytes),
        "trainable": float(trainable * 4 * 4),
        "text_activations": float(text + tokens * 2 * h * activation_bytes),
        "vision_activations": float(vision),
        "logits": float(logits),
        "per_sample": float(2 * step.rows * trainable * 4 if dp else 0),
    }
    terms["total"] = sum(terms.values())
    return terms


def _kv(shape: FullShape) -> int:
    return shape.text_hidden // shape.text_heads * shape.text_kv_heads


def _linears(shape: FullShape) -> list[tuple[str, int, int]]:
    """(module name, in, out) of every linear layer of the model."""
    h, i, kv, e = shape.text_hidden, shape.text_intermediate, _kv(shape), shape.vision_embed
    merged = e * shape.spatial_merge_size**2
    layers = []
    for n in range(shape.text_layers):
        prefix = f"model.language_model.layers.{n}"
        projections = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h)}
        layers += [(f"{prefix}.self_attn.{k}", *v) for k, v in projections.items()]
        mlp = {"gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        layers += [(f"{prefix}.mlp.{k}", *v) for k, v in mlp.items()]
    for n in range(shape.vision_depth):
        prefix = f"model.visual.blocks.{n}"
        block = {"attn.qkv": (e, 3 * e), "attn.proj": (e, e), "mlp.fc1": (e, 4 * e)}
        layers += [(f"{prefix}.{k}", *v) for k, v in {**block, "mlp.fc2": (4 * e, e)}.items()]
    layers += [
        ("model.visual.merger.mlp.0", merged, merged),
        ("model.visual.merger.mlp.2", merged, h),
    ]
    return layers
