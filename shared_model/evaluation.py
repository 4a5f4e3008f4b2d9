"""Evaluate a model on samples: generate, read (strictly and leniently), and score per task
and language.

Metric keys are ``<task>/<lang>/<metric>``, with ``<task>/<lang>/count`` beside them so that
results from several sites can be averaged with the right weights (see
:meth:`shared_model.tasks.Task.score` for the metrics of a group).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from tqdm import tqdm

from shared_model.inference import Answer, Answerer, Question
from shared_model.sample import Sample
from shared_model.tasks import Reading, get_task


def evaluate_samples(
    answerer: Answerer,
    samples: Sequence[Sample],
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, float]:
    """Answer every sample, then score each (task, language) group with its task's metrics."""
    answers = answer_samples(answerer, samples, batch_size, progress)
    return score_predictions(samples, [answer.reading for answer in answers])


def answer_samples(
    answerer: Answerer,
    samples: Sequence[Sample],
    batch_size: int = 16,
    progress: bool = False,
) -> list[Answer]:
    """The answer to every sample, in order: its text and both readings.

    Questions are asked in batches of one task, language and image kind (:func:`_batch_kind`),
    then put back in order: a batch generates until its longest answer ends and pads every
    prompt to its longest, so a report or a runaway answer in a batch of closed questions
    holds all of them. On the main job's 1,733 test records this answers the same as batches
    in record order, in 0.68 of the time with the tiny base and 0.61 with the main job's
    export (``python benchmarks/answering_order.py [--model DIR]``).
    """
    kinds = [_batch_kind(sample) for sample in samples]
    order = sorted(range(len(samples)), key=kinds.__getitem__)
    batches = []
    for _, group in groupby(order, key=kinds.__getitem__):
        members = list(group)
        batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    answers: dict[int, Answer] = {}
    for chunk in tqdm(batches, desc="evaluating", disable=not progress):
        asked = [
            Question(samples[i].images, samples[i].task, samples[i].lang, samples[i].fields)
            for i in chunk
        ]
        for index, answer in zip(chunk, answerer.answer(asked), strict=True):
            answers[index] = answer
    return [answers[index] for index in range(len(samples))]


def _batch_kind(sample: Sample) -> tuple[str, str, tuple[int, ...]]:
    """What makes questions alike in length: task, language and each image's dimensions (a
    volume carries more visual tokens than a radiograph)."""
    return sample.task, sample.lang, tuple(image.ndim for image in sample.images)


def record_references(samples: Sequence[Sample]) -> list[Any]:
    """Each sample's reference answer, as its task reads it from the record's fields: computed
    once for a bootstrap that scores the same records hundreds of times."""
    return [get_task(sample.task).reference(sample.fields) for sample in samples]


def score_predictions(
    samples: Sequence[Sample],
    predictions: Sequence[Reading],
    indices: Sequence[int] | None = None,
    references: Sequence[Any] | None = None,
) -> dict[str, float]:
    """Score one reading per sample, per task and language; with ``indices``, only those
    samples (repeats allowed, as in a bootstrap draw); ``references``
    (:func:`record_references`) saves reading each sample's reference again."""
    groups: dict[tuple[str, str], tuple[list, list]] = defaultdict(lambda: ([], []))
    for index in range(len(samples)) if indices is None else indices:
        sample = samples[index]
        parsed, expected = groups[(sample.task, sample.lang)]
        parsed.append(predictions[index])
        expected.append(
            get_task(sample.task).reference(sample.fields)
            if references is None
            else references[index]
        )
    metrics: dict[str, float] = {}
    for (task, lang), (parsed, expected) in sorted(groups.items()):
        for name, value in get_task(task).score(parsed, expected, lang).items():
            metrics[f"{task}/{lang}/{name}"] = float(value)
    return metrics
