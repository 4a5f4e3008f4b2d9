"""Ask an exported model held-out questions from the sites' test splits, in both languages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

from client.archive import load_site_samples
from client.config import load_site_config
from shared_model.export import read_export_info
from shared_model.inference import Answerer, Question
from shared_model.sample import Sample
from shared_model.tasks import STAGE_TASKS, get_task

PREFERRED = ("vqa", "classification", "detection", "landmark", "report")


def load_exported(directory: Path) -> tuple[Answerer, dict]:
    """An :class:`Answerer` over an export directory, loaded with plain transformers."""
    info = read_export_info(directory)
    model = Qwen2VLForConditionalGeneration.from_pretrained(directory, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(directory)
    return Answerer(model, processor, canvas=int(info["canvas"])), info


def test_samples(site_configs: Sequence[Path], canvas: int, slices: int) -> list[Sample]:
    """Every usable test-split sample of the ``instruct`` tasks of every site."""
    samples = []
    for path in site_configs:
        loaded, _ = load_site_samples(
            load_site_config(path),
            canvas=canvas,
            slices=slices,
            splits=("test",),
            tasks=STAGE_TASKS["instruct"],
        )
        samples.extend(loaded)
    return samples


def pick_questions(samples: Sequence[Sample], per_language: int = 3) -> list[Sample]:
    """A few samples per language, one task after another in :data:`PREFERRED` order."""
    chosen = []
    for lang in ("en", "zh"):
        pool = [s for s in samples if s.lang == lang]
        for task in PREFERRED:
            chosen += [s for s in pool if s.task == task][:1]
            if sum(s.lang == lang for s in chosen) >= per_language:
                break
    return chosen


def answer_heldout(
    export_dir: Path, site_configs: Sequence[Path], per_language: int = 3
) -> list[dict[str, Any]]:
    """Question, expected answer and generated answer for a few held-out test samples."""
    answerer, info = load_exported(export_dir)
    samples = pick_questions(
        test_samples(site_configs, int(info["canvas"]), int(info["volume_slices"])), per_language
    )
    answers = answerer.answer([Question(s.images, s.task, s.lang, s.fields) for s in samples])
    return [
        {
            "lang": s.lang,
            "task": s.task,
            "question": get_task(s.task).prompt(s.fields, s.lang).splitlines()[0],
            "expected": get_task(s.task).target(s.fields, s.lang),
            "answer": a.text,
            "correct": a.parsed == get_task(s.task).reference(s.fields),
        }
        for s, a in zip(samples, answers, strict=True)
    ]
