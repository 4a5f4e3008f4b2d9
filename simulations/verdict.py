"""Did the consortium learn? A short verdict under a simulation's table.

A table of forty rows answers the question a researcher brings to ``fedumit simulate`` only to
whoever reads every bracket. The verdict reads the rows for them: which tasks improved over the
base beyond their 95 % interval, which fell, which beat the majority answer, how many answers
ended in their task's format, and how far Chinese lies from English.

The score a task is judged by is its headline, except for report generation, judged by BLEU-1:
at a small model's size a report rarely shares a run of four words with its reference, so
BLEU-4 stays at zero long after BLEU-1 has moved. The headline stays the headline everywhere
else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from shared_model.tasks import get_task
from simulations.majority import MAJORITY, VS_MAJORITY
from simulations.report import INTERVAL, established

JUDGED_BY = {"report": "bleu1"}
"""Tasks judged by another score than their headline, and by which."""
WELL_FORMED = "well_formed"


@dataclass(frozen=True)
class Verdict:
    """What a table says about learning; groups are written ``task/lang``."""

    improved: list[str]
    worse: list[str]
    unsettled: list[str]
    above_majority: list[str]
    improved_to_at_most_majority: list[str]
    """Improved, yet ending at or below the majority answer's score: what a model scores that
    learned to answer the most common answer, not to read its images."""
    well_formed: float | None
    """The mean over task and language groups of the share of answers in their format."""
    chinese_gap: dict[str, float]
    """Per task judged in both languages, Chinese minus English (in the score's own units)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


def judged_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The row each task and language is judged by (:data:`JUDGED_BY`, else its headline) of
    the tasks answered in one of their formats or in prose: the closed-form tasks and report."""
    judged = []
    for row in rows:
        task = get_task(row["task"])
        if not (task.closed_form or row["task"] in JUDGED_BY):
            continue
        if row["metric"] == JUDGED_BY.get(row["task"], task.headline):
            judged.append(row)
    return judged


def verdict(rows: Sequence[Mapping[str, Any]], before: str, after: str) -> Verdict:
    """Read a table whose rows carry columns ``before`` and ``after`` and the interval of
    ``after - before`` (and, where a task has one, of ``after`` minus the majority answer)."""
    judged = judged_rows(rows)
    moves = {_group(r): established(r, INTERVAL) for r in judged}
    finals = {_group(r): r.get(after) for r in judged}
    gaps = {}
    for group, value in finals.items():
        task, lang = group.split("/")
        english = finals.get(f"{task}/en")
        if lang == "zh" and value is not None and english is not None:
            gaps[task] = round(value - english, 4)
    shares = [r[after] for r in rows if r["metric"] == WELL_FORMED and r.get(after) is not None]
    return Verdict(
        improved=[g for g, move in moves.items() if move > 0],
        worse=[g for g, move in moves.items() if move < 0],
        unsettled=[g for g, move in moves.items() if move == 0],
        above_majority=[
            _group(r) for r in judged if VS_MAJORITY in r and established(r, VS_MAJORITY) > 0
        ],
        improved_to_at_most_majority=[
            _group(r)
            for r in judged
            if moves[_group(r)] > 0
            and r.get(MAJORITY) is not None
            and r.get(after) is not None
            and r[after] <= r[MAJORITY]
        ],
        well_formed=round(sum(shares) / len(shares), 4) if shares else None,
        chinese_gap=gaps,
    )


def verdict_lines(result: Verdict) -> list[str]:
    """The verdict in a few sentences, for the console."""
    judged = len(result.improved) + len(result.worse) + len(result.unsettled)
    lines = [
        f"improved beyond its 95% interval: {len(result.improved)} of {judged} "
        f"({_listing(result.improved)})",
        f"of these, at or below the majority answer: "
        f"{_listing(result.improved_to_at_most_majority)}",
        f"worse beyond it: {_listing(result.worse)}",
        f"above the majority answer beyond it: {_listing(result.above_majority)}",
    ]
    if result.well_formed is not None:
        lines.append(f"answers in their task's format: {result.well_formed:.0%} (mean over groups)")
    if result.chinese_gap:
        gaps = ", ".join(f"{task} {gap:+.3f}" for task, gap in result.chinese_gap.items())
        lines.append(f"Chinese minus English at the end: {gaps}")
    return lines


def _group(row: Mapping[str, Any]) -> str:
    return f"{row['task']}/{row['lang']}"


def _listing(groups: Sequence[str]) -> str:
    return ", ".join(groups) if groups else "none"
