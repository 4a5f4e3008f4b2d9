"""``fedumit seeds``: several runs of one experiment side by side, so that a choice rests on
what holds across seeds rather than on one draw.

A simulation's verdict (:mod:`simulations.verdict`) judges one run, and one run is one draw of
the hospitals, the patients each step samples and the noise: at the main job's size which of
the ten judged scores clear their 95 % intervals changes from seed to seed by more than most
levers change it (:mod:`simulations.defaults`). This reads the summaries that ``fedumit
simulate`` writes (``RUN/summary.json``) and prints, for each judged score, its change in every
run and how many runs raised it or lowered it beyond its interval; for every run, how many
scores it raised and lowered and its share of well-formed answers; and the mean and standard
deviation of the raised counts.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from simulations.report import INTERVAL, established
from simulations.verdict import judged_rows

SUMMARY = "summary.json"
MOVE_MARKS = {1: "+", -1: "-", 0: " "}
LOG_WIDTH = 160


class SummaryError(ValueError):
    """A path holds no run summary, or one that cannot be read."""


@dataclass(frozen=True)
class JudgedScore:
    """One judged score of one run: before and after training, and whether the change cleared
    its interval (``1`` better, ``-1`` worse, ``0`` neither)."""

    before: float | None
    after: float | None
    move: int


@dataclass(frozen=True)
class RunScores:
    """What one run's summary says about learning."""

    name: str
    scores: dict[str, JudgedScore]
    """Keyed ``task/lang``, in the summary's order."""
    well_formed: float | None

    @property
    def raised(self) -> int:
        """Judged scores that rose beyond their interval."""
        return sum(score.move > 0 for score in self.scores.values())

    @property
    def lowered(self) -> int:
        """Judged scores that fell beyond their interval."""
        return sum(score.move < 0 for score in self.scores.values())


def summary_paths(path: Path) -> list[Path]:
    """The run summaries ``path`` names: a summary file, a run folder holding one, or a
    ``fedumit simulate --out`` folder (every run under its ``runs/``, oldest first)."""
    if not path.exists():
        raise SummaryError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    if (path / SUMMARY).is_file():
        return [path / SUMMARY]
    found = sorted((path / "runs").glob(f"*/{SUMMARY}"))
    if not found:
        raise SummaryError(f"{path}: no {SUMMARY} here or under its runs/ (not a finished run)")
    return found


def load_run(path: Path, name: str) -> RunScores:
    """The judged scores of the summary at ``path``, under ``name``."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        rows = summary["table"]
        well_formed = summary.get("verdict", {}).get("well_formed")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SummaryError(f"{path}: not a simulation summary ({error})") from error
    scores = {
        f"{row['task']}/{row['lang']}": JudgedScore(
            row.get("round 0"), row.get("final"), established(row, INTERVAL)
        )
        for row in judged_rows(rows)
    }
    return RunScores(name, scores, well_formed)


def load_runs(paths: Sequence[Path]) -> list[RunScores]:
    """Every run the paths name (:func:`summary_paths`), each named by its path, or by its
    path and run folder where a path holds several runs."""
    runs = []
    for path in paths:
        found = summary_paths(path)
        for summary in found:
            name = str(path) if len(found) == 1 else f"{path}:{summary.parent.name}"
            runs.append(load_run(summary, name))
    return runs


def across_runs(runs: Sequence[RunScores]) -> dict[str, Any]:
    """Per judged score, the runs that raised and lowered it and its mean change; per run,
    its counts; and the raised counts' mean and standard deviation (JSON-safe)."""
    groups = list(dict.fromkeys(group for run in runs for group in run.scores))
    per_score = {}
    for group in groups:
        present = [run.scores[group] for run in runs if group in run.scores]
        changes = [s.after - s.before for s in present if None not in (s.before, s.after)]
        per_score[group] = {
            "runs": len(present),
            "raised": sum(s.move > 0 for s in present),
            "lowered": sum(s.move < 0 for s in present),
            "mean_change": round(statistics.fmean(changes), 4) if changes else None,
        }
    raised = [run.raised for run in runs]
    return {
        "runs": [
            {
                "name": run.name,
                "raised": run.raised,
                "lowered": run.lowered,
                "judged": len(run.scores),
                "well_formed": run.well_formed,
                "scores": {
                    group: {"before": s.before, "after": s.after, "move": s.move}
                    for group, s in run.scores.items()
                },
            }
            for run in runs
        ],
        "scores": per_score,
        "raised_mean": round(statistics.fmean(raised), 3) if raised else None,
        "raised_sd": round(statistics.stdev(raised), 3) if len(raised) > 1 else None,
    }


def print_across(runs: Sequence[RunScores], summary: dict[str, Any], console: Console) -> None:
    """Each judged score's final value by run (``+`` raised, ``-`` lowered beyond its
    interval) and its mean change, then each run's counts and the spread of the raised
    counts."""
    table = Table(
        title="judged scores at the end; + / - changed beyond the 95 % interval",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("score", no_wrap=True)
    for index in range(len(runs)):
        table.add_column(str(index + 1), justify="right", no_wrap=True)
    for column in ("raised", "lowered", "mean change"):
        table.add_column(column, justify="right", no_wrap=True)
    for group, totals in summary["scores"].items():
        change = totals["mean_change"]
        table.add_row(
            group,
            *(_cell(run.scores.get(group)) for run in runs),
            str(totals["raised"]),
            str(totals["lowered"]),
            "-" if change is None else f"{change:+.3f}",
        )
    table.add_section()
    table.add_row("raised", *(str(run.raised) for run in runs))
    table.add_row("lowered", *(str(run.lowered) for run in runs))
    table.add_row("well-formed", *(_share(run.well_formed) for run in runs))
    console.print(table)
    for index, run in enumerate(runs, start=1):
        console.print(f"{index}: {run.name}")
    if summary["raised_sd"] is not None:
        console.print(
            f"raised per run: mean {summary['raised_mean']:.1f}, standard deviation "
            f"{summary['raised_sd']:.1f}, from {min(r.raised for r in runs)} to "
            f"{max(r.raised for r in runs)} over {len(runs)} runs"
        )


def run_seeds(paths: Sequence[Path], as_json: bool = False) -> int:
    """``fedumit seeds``: print the runs side by side (or as JSON); 2 when a path holds no
    readable summary."""
    try:
        runs = load_runs(paths)
    except SummaryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    console = Console()
    if not console.is_terminal:  # a log or a pipe: room for a column per run
        console = Console(width=LOG_WIDTH)
    summary = across_runs(runs)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print_across(runs, summary, console)
    return 0


def _cell(score: JudgedScore | None) -> str:
    if score is None or None in (score.before, score.after):
        return "-"
    return f"{score.after:.2f}{MOVE_MARKS[score.move]}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
