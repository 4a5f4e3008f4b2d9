"""Evaluate a model on samples: generate, read (strictly and leniently), and score per task
and language.

Metric keys are ``<task>/<lang>/<metric>``, with ``<task>/<lang>/count`` beside them so that
results from several sites can be averaged with the right weights (see
:meth:`shared_model.tasks.Task.score` for the metrics of a group).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
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
    """The answer to every sample, in order: its text and both readings."""
    answers: list[Answer] = []
    batches = range(0, len(samples), batch_size)
    for start in tqdm(batches, desc="evaluating", disable=not progress):
        chunk = samples[start : start + batch_size]
        answers.extend(
            answerer.answer([Question(s.images, s.task, s.lang, s.fields) for s in chunk])
        )
    return answers


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
