"""From conversations and samples to Qwen2-VL model inputs, with labels only on the answer.

A 2D image goes through the processor's image path, a 3D volume (``(slices, H, W, C)``) through
its video path; grey pixels (``C`` = 1) are copied to RGB on the way in. Prompt and answer are
tokenized apart: the model learns exactly the tokens it must generate after
``<|im_start|>assistant\\n``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from transformers import ProcessorMixin

from shared_model.sample import Sample
from shared_model.spec import ModelSpec
from shared_model.tasks import get_task

IGNORE_INDEX = -100
ANSWER_END = "<|im_end|>"


@dataclass(frozen=True)
class Encoded:
    """One tokenized example with its pixels, before batching."""

    input_ids: torch.Tensor  # (length,)
    labels: torch.Tensor  # (length,), IGNORE_INDEX outside the answer
    mm_token_type_ids: torch.Tensor  # (length,): 0 text, 1 image, 2 video
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    pixel_values_videos: torch.Tensor | None
    video_grid_thw: torch.Tensor | None
    patient_id: str = ""

    @property
    def vision_shape(self) -> tuple:
        """Patch grid of every image and video (examples of any grids share a micro-batch)."""
        grids = [g for g in (self.image_grid_thw, self.video_grid_thw) if g is not None]
        return tuple(tuple(row) for g in grids for row in g.tolist())


@dataclass
class Batch:
    """Padded model inputs and, per row, the patient (privacy unit) it belongs to."""

    inputs: dict[str, torch.Tensor]
    patient_ids: list[str]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """Move tensors to ``device``; floating pixel tensors also to ``dtype``."""
        moved = {}
        for key, value in self.inputs.items():
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            moved[key] = value.to(device)
        return Batch(moved, self.patient_ids)

    def __len__(self) -> int:
        return len(self.patient_ids)


def user_message(text: str, images: Sequence[np.ndarray]) -> list[dict]:
    """A chat with one user turn: every image (or volume) first, then the instruction."""
    content = [{"type": "video" if image.ndim == 4 else "image"} for image in images]
    return [{"role": "user", "content": [*content, {"type": "text", "text": text}]}]


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A uint8 ``(..., 1)`` grey image or volume as ``(..., 3)``; RGB stays as it is."""
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def encode_prompt(
    processor: ProcessorMixin, images: Sequence[np.ndarray], text: str, canvas: int
) -> dict[str, torch.Tensor]:
    """Processor outputs for a user turn followed by the assistant header (batch of one)."""
    prompt = processor.apply_chat_template(
        user_message(text, images), add_generation_prompt=True, tokenize=False
    )
    stills = [as_rgb(image) for image in images if image.ndim == 3]
    volumes = [as_rgb(image) for image in images if image.ndim == 4]
    size = {"shortest_edge": canvas * canvas, "longest_edge": canvas * canvas}
    return processor(
        text=[prompt],
        images=stills or None,
        videos=volumes or None,
        images_kwargs={"size": size},
        videos_kwargs={"size": size, "do_sample_frames": False, "cap_pixels_per_frame": True},
        return_tensors="pt",
    )


def encode_question(
    processor: ProcessorMixin,
    images: Sequence[np.ndarray],
    text: str,
    *,
    canvas: int,
    patient_id: str = "",
) -> Encoded:
    """A user turn and the assistant header, ready for generation (no label is learned)."""
    prompt = encode_prompt(processor, images, text, canvas)
    input_ids = prompt["input_ids"][0]
    return Encoded(
        input_ids=input_ids,
        labels=torch.full_like(input_ids, IGNORE_INDEX),
        mm_token_type_ids=prompt["mm_token_type_ids"][0],
        pixel_values=prompt.get("pixel_values"),
        image_grid_thw=prompt.get("image_grid_thw"),
        pixel_values_videos=prompt.get("pixel_values_videos"),
        video_grid_thw=prompt.get("video_grid_thw"),
        patient_id=patient_id,
    )


def encode_example(
    processor: ProcessorMixin,
    images: Sequence[np.ndarray],
    text: str,
    answer: str,
    *,
    canvas: int,
    max_length: int,
    patient_id: str = "",
) -> Encoded:
    """Tokenize a user turn and its answer; labels cover the answer and its end token only."""
    question = encode_question(processor, images, text, canvas=canvas, patient_id=patient_id)
    answer_ids = processor.tokenizer(answer + ANSWER_END, add_special_tokens=False)["input_ids"]
    room = max_length - len(question.input_ids)
    if room < 1:
        raise ValueError(
            f"prompt of {len(question.input_ids)} tokens leaves no room for an answer within "
            f"max_text_length={max_length}"
        )
    answer_ids = torch.tensor(answer_ids[:room], dtype=torch.long)
    return replace(
        question,
        input_ids=torch.cat([question.input_ids, answer_ids]),
        labels=torch.cat([question.labels, answer_ids]),
        mm_token_type_ids=torch.cat([question.mm_token_type_ids, torch.zeros_like(answer_ids)]),
    )


def encode_sample(processor: ProcessorMixin, sample: Sample, spec: ModelSpec) -> Encoded:
    """Render a sample with its task's template in its language, then :func:`encode_example`."""
    task = get_task(sample.task)
    return encode_example(
        processor,
        sample.images,
        task.prompt(sample.fields, sample.lang),
        task.target(sample.fields, sample.lang),
        canvas=spec.canvas,
        max_length=spec.max_text_length,
        patient_id=sample.patient_id,
    )


def collate(examples: Sequence[Encoded], pad_token_id: int, padding_side: str = "right") -> Batch:
    """Pad examples into one batch; pixel tensors of all rows are concatenated in row order."""
    if not examples:
        raise ValueError("cannot collate an empty batch")
    length = max(len(e.input_ids) for e in examples)
    rows = {"input_ids": [], "labels": [], "attention_mask": [], "mm_token_type_ids": []}
    for example in examples:
        pad = length - len(example.input_ids)
        values = {
            "input_ids": (example.input_ids, pad_token_id),
            "labels": (example.labels, IGNORE_INDEX),
            "attention_mask": (torch.ones_like(example.input_ids), 0),
            "mm_token_type_ids": (example.mm_token_type_ids, 0),
        }
        for key, (tensor, fill) in values.items():
            padding = torch.full((pad,), fill, dtype=tensor.dtype)
            parts = (tensor, padding) if padding_side == "right" else (padding, tensor)
            rows[key].append(torch.cat(parts))
    inputs = {key: torch.stack(value) for key, value in rows.items()}
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"):
        parts = [getattr(e, key) for e in examples if getattr(e, key) is not None]
        if parts:
            inputs[key] = torch.cat(parts)
    return Batch(inputs, [e.patient_id for e in examples])
