"""What a task's scores are: readings of an answer, metric descriptions, and the common counts.

Every answer is read twice. The strict reading accepts only the task's own format (``2:no``,
``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``, ``[x,y]`` ...) and feeds the headline metric; the
lenient reading also takes what a reader would still understand (``no``, ``(2) no``, swapped
corners ...) and feeds the ``<metric>_lenient`` scores beside it. Score keys every group has:

- ``count``: answers scored; ``misses``: answers not even the lenient reading understood;
- ``well_formed``: share of answers in the task's own format (strict reading not ``None``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from shared_model.metrics import check_lengths, mean

COUNT = "count"
MISSES = "misses"
WELL_FORMED = "well_formed"
LENIENT_SUFFIX = "_lenient"


@dataclass(frozen=True)
class Reading:
    """One generated answer read two ways; ``None`` where a reading finds no answer.

    Parameters
    ----------
    strict:
        The structured answer when the text is exactly in the task's format, else ``None``.
    lenient:
        The structured answer a lenient reader finds; equal to ``strict`` when that is set.
    """

    strict: Any
    lenient: Any

    @property
    def well_formed(self) -> bool:
        """True when the answer is in the task's own format."""
        return self.strict is not None


@dataclass(frozen=True)
class Metric:
    """One score a task reports.

    Parameters
    ----------
    name:
        Key of the score (``<task>/<lang>/<name>`` on the wire).
    higher_is_better:
        Direction of improvement, default True (``mre``, a distance, is False).
    lenient:
        Also reported on lenient readings, as ``<name>_lenient``; default False.
    in_tables:
        Shown in report tables (simulate, compare, model card); default True. Scores that only
        explain another (precision and recall beside mAP) are left to the JSON.
    from_answers:
        Scored from the readings of the answers by :meth:`Task.score`; default True. A score
        read from the model itself (``option_auc``) is not.
    """

    name: str
    higher_is_better: bool = True
    lenient: bool = False
    in_tables: bool = True
    from_answers: bool = True

    def lenient_twin(self) -> Metric:
        """The same score on lenient readings."""
        return Metric(
            self.name + LENIENT_SUFFIX,
            self.higher_is_better,
            False,
            self.in_tables,
            self.from_answers,
        )


WELL_FORMED_METRIC = Metric(WELL_FORMED)
OPTION_AUC = Metric("option_auc", from_answers=False)
"""How well a model's likelihoods rank a closed question's options (0.5 is chance): scored by
:mod:`shared_model.option_scores` from the model itself, not from its answers, so only a report
that computes it (``fedumit simulate``) shows it."""


def group_counts(readings: Sequence[Reading], references: Sequence[Any]) -> dict[str, float]:
    """``count``, ``misses`` and (for a non-empty group) ``well_formed`` of one group."""
    result = {
        COUNT: float(check_lengths(readings, references)),
        MISSES: float(sum(reading.lenient is None for reading in readings)),
    }
    if readings:
        result[WELL_FORMED] = mean([reading.well_formed for reading in readings])
    return result


def is_count(name: str) -> bool:
    """True for the size entries of a score dict (``count``, ``closed_count``, ``misses``)."""
    return name in (COUNT, MISSES) or name.endswith(f"_{COUNT}")


def count_key(key: str, keys: Collection[str]) -> str | None:
    """The count that weighs score ``key`` (``<task>/<lang>/<name>``) among ``keys``: its
    sub-group's ``<prefix>_count`` when reported (``closed_accuracy`` -> ``closed_count``),
    else the group's ``count``; ``None`` when neither is there."""
    group, name = key.rsplit("/", 1)
    prefix = name.split("_", 1)[0]
    for candidate in (f"{group}/{prefix}_{COUNT}", f"{group}/{COUNT}"):
        if candidate in keys:
            return candidate
    return None
