"""Evaluate a model on samples: generate, parse, and score per task and language.

Metric keys are ``<task>/<lang>/<metric>``, with ``<task>/<lang>/count`` beside them so that
results from several sites can be averaged with the right weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from tqdm import tqdm

from shared_model.inference import Answerer, Question
from shared_model.sample import Sample
from shared_model.tasks import get_task


def evaluate_samples(
    answerer: Answerer,
    samples: Sequence[Sample],
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, float]:
    """Answer every sample, then score each (task, language) group with its task's metrics."""
    groups: dict[tuple[str, str], tuple[list, list]] = defaultdict(lambda: ([], []))
    batches = range(0, len(samples), batch_size)
    for start in tqdm(batches, desc="evaluating", disable=not progress):
        chunk = samples[start : start + batch_size]
        questions = [Question(s.images, s.task, s.lang, s.fields) for s in chunk]
        for sample, answer in zip(chunk, answerer.answer(questions), strict=True):
            predictions, references = groups[(sample.task, sample.lang)]
            predictions.append(answer.parsed)
            references.append(get_task(sample.task).reference(sample.fields))
    metrics: dict[str, float] = {}
    for (task, lang), (predictions, references) in sorted(groups.items()):
        scores = get_task(task).score(predictions, references, lang)
        for name, value in scores.items():
            metrics[f"{task}/{lang}/{name}"] = float(value)
    return metrics
