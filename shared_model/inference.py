"""Answer a question about an image or volume with a (merged) model, structured per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoProcessor, ProcessorMixin, Qwen2VLForConditionalGeneration

from shared_model.device import resolve_device
from shared_model.inputs import collate, encode_question
from shared_model.tasks import Reading, get_task


@dataclass(frozen=True)
class Answer:
    """Generated text and the task's strict and lenient readings of it."""

    text: str
    reading: Reading


@dataclass(frozen=True)
class Question:
    """What to ask: images (2D arrays or volumes at canvas size), task, language and fields."""

    images: Sequence[np.ndarray]
    task: str
    lang: str
    fields: Mapping[str, Any]


class Answerer:
    """Greedy generation over a model and processor; batches questions with left padding."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: ProcessorMixin,
        canvas: int,
        max_new_tokens: int = 96,
    ) -> None:
        self.model, self.processor = model.eval(), processor
        self.canvas, self.max_new_tokens = canvas, max_new_tokens

    @torch.no_grad()
    def answer(self, questions: Sequence[Question]) -> list[Answer]:
        """One :class:`Answer` per question, in order."""
        if not questions:
            return []
        tokenizer = self.processor.tokenizer
        device = next(self.model.parameters()).device
        encoded = []
        for question in questions:
            prompt = get_task(question.task).prompt(question.fields, question.lang)
            encoded.append(
                encode_question(self.processor, question.images, prompt, canvas=self.canvas)
            )
        batch = collate(encoded, tokenizer.pad_token_id, padding_side="left").to(device)
        batch.inputs.pop("labels")
        generated = self.model.generate(
            **batch.inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = generated[:, batch.inputs["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=False)
        answers = []
        for question, text in zip(questions, texts, strict=True):
            text = _strip_end(text, tokenizer)
            task = get_task(question.task)
            answers.append(Answer(text, task.read(text, question.fields, question.lang)))
        return answers


def load_answerer(directory: str | Path, canvas: int, device: str = "auto") -> Answerer:
    """An :class:`Answerer` over a Hugging Face model directory (a base or an export), loaded
    with plain transformers."""
    model = Qwen2VLForConditionalGeneration.from_pretrained(directory, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(directory)
    return Answerer(model.to(resolve_device(device)), processor, canvas=canvas)


def _strip_end(text: str, tokenizer) -> str:
    """Cut at the end-of-turn token and drop padding."""
    for stop in ("<|im_end|>", tokenizer.pad_token):
        text = text.split(stop)[0]
    return text.strip()
