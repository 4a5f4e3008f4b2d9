"""The majority-answer baseline: what a model scores that gives every question the same answer.

For the tasks whose answers are one of a few values (:attr:`shared_model.tasks.Task.discrete`:
closed VQA and classification) the baseline answers every test record with the most common
reference among the test records of its task, language and kind of answer (an option for a
closed question, a word for an open one). Taken from the test records themselves, it is the best
any constant answer scores on them: a model has to beat it to show that it reads its images.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

from shared_model.evaluation import score_predictions
from shared_model.sample import Sample
from shared_model.tasks import Reading, get_task
from simulations.bootstrap import paired_intervals
from simulations.report import add_intervals

MAJORITY = "majority"
"""The baseline's column in a table's rows."""
VS_MAJORITY = "interval_vs_majority"
"""The row key of the interval of a model's score minus the baseline's."""

Value = TypeVar("Value")


def add_majority(
    rows: Sequence[dict[str, Any]], samples: Sequence[Sample], runs: Sequence[Sequence[Reading]]
) -> list[dict[str, Any]]:
    """Each row with the baseline's score under :data:`MAJORITY` (``None`` where the row is not
    the headline of a discrete task) and, for those that have one, the paired bootstrap
    interval of ``runs`` (one or more runs of a model's readings of ``samples``) minus the
    baseline under :data:`VS_MAJORITY`."""
    positions, majority = majority_baseline(samples)
    chosen = [samples[p] for p in positions]
    scores = headline_scores(score_predictions(chosen, majority)) if positions else {}
    for row in rows:
        row[MAJORITY] = scores.get(f"{row['task']}/{row['lang']}/{row['metric']}")
    if not positions:
        return list(rows)
    model = [[run[p] for p in positions] for run in runs]
    intervals = headline_scores(paired_intervals(chosen, [majority], model))
    return add_intervals(rows, intervals, VS_MAJORITY)


def majority_baseline(samples: Sequence[Sample]) -> tuple[list[int], list[Reading]]:
    """The positions of the samples of discrete tasks, and the baseline's reading of each."""
    references: dict[int, Hashable] = {
        position: get_task(sample.task).reference(sample.fields)
        for position, sample in enumerate(samples)
        if get_task(sample.task).discrete
    }
    counts: dict[tuple[str, str, type], Counter] = defaultdict(Counter)
    for position, reference in references.items():
        counts[_group(samples[position], reference)][reference] += 1
    majority = {group: counter.most_common(1)[0][0] for group, counter in counts.items()}
    readings = [
        Reading(answer, answer)
        for answer in (majority[_group(samples[p], r)] for p, r in references.items())
    ]
    return list(references), readings


def headline_scores(scores: Mapping[str, Value]) -> dict[str, Value]:
    """Only each task's headline score of ``scores`` (keys ``task/lang/metric``)."""
    return {
        key: value
        for key, value in scores.items()
        if key.split("/")[2] == get_task(key.split("/")[0]).headline
    }


def _group(sample: Sample, reference: Hashable) -> tuple[str, str, type]:
    return sample.task, sample.lang, type(reference)
