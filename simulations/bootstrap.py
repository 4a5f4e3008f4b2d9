"""How sure is a difference between two models scored on the same test records?

A paired, stratified bootstrap: the test records are drawn again with replacement within each
task and language, both models are scored on the same draw, and the spread of the difference
over many draws gives its interval. With twenty records in a cell, a difference of ten points is
often noise; this says so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from shared_model.evaluation import record_references, score_predictions
from shared_model.option_scores import OptionShares
from shared_model.sample import Sample

RESAMPLES = 500
LEVEL = 0.95

DrawScore = Callable[[Sequence[int]], Mapping[str, float]]
"""One run's scores on a draw of the records (their positions, repeats allowed)."""
Scorer = Callable[[Sequence[Sample], Sequence[Any]], DrawScore]
"""Prepares a run's predictions on the records once, for scoring many draws."""


def reading_scorer(samples: Sequence[Sample], run: Sequence[Any]) -> DrawScore:
    """Scores a run of readings (:func:`~shared_model.evaluation.score_predictions`), each
    record's reference read once."""
    return partial(score_predictions, samples, run, references=record_references(samples))


def option_auc_scorer(samples: Sequence[Sample], run: Sequence[Any]) -> DrawScore:
    """Scores a run of option likelihoods (:func:`shared_model.option_scores.option_auc`),
    each record's likelihood shares computed once."""
    return OptionShares(samples, run).auc


def paired_intervals(
    samples: Sequence[Sample],
    before: Sequence[Sequence[Any]],
    after: Sequence[Sequence[Any]],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
    scorer: Scorer = reading_scorer,
) -> dict[str, tuple[float, float]]:
    """Per metric key, the central ``level`` interval of ``after - before`` over ``resamples``
    draws of the records, with replacement, within each task and language.

    ``before`` and ``after`` each hold one or more runs' predictions (one per sample); a
    model's score on a draw is the mean over its runs, as in a table of several seeds.
    ``scorer`` prepares each run for scoring draws (:func:`reading_scorer` for the answers'
    readings, :func:`option_auc_scorer` for option likelihoods).
    """
    if not before or not after:
        raise ValueError("at least one run of predictions is needed from each model")
    if any(len(run) != len(samples) for run in (*before, *after)):
        raise ValueError("one prediction per sample is needed from each run")
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        groups[(sample.task, sample.lang)].append(index)
    old_runs = [scorer(samples, run) for run in before]
    new_runs = [scorer(samples, run) for run in after]
    rng = np.random.default_rng(seed)
    differences: dict[str, list[float]] = defaultdict(list)
    for _ in range(resamples):
        drawn = [int(i) for members in groups.values() for i in rng.choice(members, len(members))]
        old = mean_scores([score(drawn) for score in old_runs])
        new = mean_scores([score(drawn) for score in new_runs])
        for key in old.keys() & new.keys():
            differences[key].append(new[key] - old[key])
    return {key: central_interval(values, level) for key, values in differences.items()}


def central_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` interval of ``values`` (percentiles of their draws)."""
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


def mean_scores(results: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per metric key, the mean over the results that have it."""
    values: dict[str, list[float]] = defaultdict(list)
    for metrics in results:
        for key, value in metrics.items():
            values[key].append(value)
    return {key: sum(v) / len(v) for key, v in values.items()}
