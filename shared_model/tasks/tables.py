"""Rows of score tables, the same for every report: simulate's and compare's tables, the model
card and the run plots.

Scores are keyed ``<task>/<lang>/<metric>``. A table shows, per task and language, the task's
table metrics in :meth:`Task.scored_metrics` order: the headline first (``"headline": True``),
its lenient twin, the share of well-formed answers, then the others; counts stay out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared_model.tasks.base import Task
from shared_model.tasks.registry import TASK_NAMES, get_task


def split_key(key: str) -> tuple[str, str, str] | None:
    """``(task, lang, metric)`` of a score key of a known task; ``None`` for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] not in TASK_NAMES:
        return None
    return parts[0], parts[1], parts[2]


def groups(keys: Iterable[str]) -> list[tuple[str, str]]:
    """The (task, language) groups of score keys, in registry order, then by language."""
    found = {parts[:2] for parts in map(split_key, keys) if parts is not None}
    return sorted(found, key=lambda group: (TASK_NAMES.index(group[0]), group[1]))


def headline_key(task: str, lang: str) -> str:
    """The key of a group's headline score."""
    return f"{task}/{lang}/{get_task(task).headline}"


def describe(task: Task, metric: str) -> dict[str, Any]:
    """What a row says about its metric: whether it is the headline, and which way is better."""
    higher = task.metric(metric).higher_is_better
    return {"headline": metric == task.headline, "better": "higher" if higher else "lower"}


def score_rows(columns: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """One row per table metric of every group found in any column.

    Parameters
    ----------
    columns:
        Scores per column (a model, an arm of a comparison, a round), keyed by score key.

    Returns
    -------
    list of dict
        ``task``, ``lang``, ``metric``, ``headline`` (bool), ``better`` (``higher`` or
        ``lower``) and one entry per column (``None`` where that column lacks the score).
    """
    rows = []
    for task_name, lang in groups(key for scores in columns.values() for key in scores):
        task = get_task(task_name)
        for metric in task.scored_metrics():
            key = f"{task_name}/{lang}/{metric.name}"
            if not metric.in_tables or not any(key in scores for scores in columns.values()):
                continue
            row: dict[str, Any] = {"task": task_name, "lang": lang, "metric": metric.name}
            row.update(describe(task, metric.name))
            row.update({name: scores.get(key) for name, scores in columns.items()})
            rows.append(row)
    return rows
