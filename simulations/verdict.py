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
from typing import TYPE_CHECKING, Any

from shared_model.tasks import get_task
from simulations.majority import MAJORITY, VS_MAJORITY
from simulations.report import INTERVAL, established

if TYPE_CHECKING:
    from simulations.language_twins import LanguageGap

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
    """Per task judged in both languages, Chinese minus English at the end (in the score's own
    units): over the same images where the test records were also asked in the other language
    (:mod:`simulations.language_twins`), else over each language's own records."""
    chinese_gap_interval: dict[str, list[float]]
    """The 95 % interval of each gap measured over the same images; empty otherwise."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


def judged_metric(task_name: str) -> str | None:
    """The metric a task is judged by (:data:`JUDGED_BY`, else its headline), for the tasks
    answered in one of their formats or in prose (the closed-form tasks and report); ``None``
    for the others."""
    task = get_task(task_name)
    if not (task.closed_form or task_name in JUDGED_BY):
        return None
    return JUDGED_BY.get(task_name, task.headline)


def judged_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The row each task and language is judged by (:func:`judged_metric`)."""
    return [row for row in rows if row["metric"] == judged_metric(row["task"])]


def verdict(
    rows: Sequence[Mapping[str, Any]],
    before: str,
    after: str,
    language_gaps: Sequence[LanguageGap] = (),
) -> Verdict:
    """Read a table whose rows carry columns ``before`` and ``after`` and the interval of
    ``after - before`` (and, where a task has one, of ``after`` minus the majority answer).
    ``language_gaps`` (of ``after``, over the same images) replace the table's own Chinese
    minus English."""
    judged = judged_rows(rows)
    moves = {_group(r): established(r, INTERVAL) for r in judged}
    finals = {_group(r): r.get(after) for r in judged}
    gaps = {}
    for group, value in finals.items():
        task, lang = group.split("/")
        english = finals.get(f"{task}/en")
        if lang == "zh" and value is not None and english is not None:
            gaps[task] = round(value - english, 4)
    gaps.update({gap.task: round(gap.gap, 4) for gap in language_gaps})
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
        chinese_gap_interval={
            gap.task: [round(bound, 4) for bound in gap.interval] for gap in language_gaps
        },
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
        gaps = ", ".join(
            f"{task} {gap:+.3f}{_bracket(result.chinese_gap_interval.get(task))}"
            for task, gap in result.chinese_gap.items()
        )
        images = "on the same images" if result.chinese_gap_interval else "over their own records"
        lines.append(f"Chinese minus English at the end, {images}: {gaps}")
    return lines


def _bracket(interval: Sequence[float] | None) -> str:
    return f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""


def _group(row: Mapping[str, Any]) -> str:
    return f"{row['task']}/{row['lang']}"


def _listing(groups: Sequence[str]) -> str:
    return ", ".join(groups) if groups else "none"
