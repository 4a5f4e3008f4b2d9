"""Tables a simulation prints: per task and language the headline score, its lenient twin, the
share of well-formed answers and the task's other table metrics, one column per model.

Rows come from :func:`shared_model.tasks.score_rows`, the source every report shares: each row
says whether it is its task's headline (``"headline"``) and which way is better (``"better"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared_model.tasks import get_task

INTERVAL = "interval"
"""The row key of the interval of a table's main difference."""


@dataclass(frozen=True)
class Change:
    """A difference column: ``after - before``, with the interval a row keeps under ``interval``."""

    before: str
    after: str
    interval: str = INTERVAL


def add_intervals(
    rows: Sequence[dict[str, Any]],
    intervals: Mapping[str, tuple[float, float]],
    name: str = INTERVAL,
) -> list[dict[str, Any]]:
    """Each row with the interval of its ``task/lang/metric`` difference under ``name``, where
    there is one."""
    for row in rows:
        interval = intervals.get(f"{row['task']}/{row['lang']}/{row['metric']}")
        if interval is not None:
            row[name] = [round(interval[0], 4), round(interval[1], 4)]
    return list(rows)


def established(row: Mapping[str, Any], name: str = INTERVAL) -> int:
    """``1`` when the row's interval ``name`` lies wholly on the better side of zero, ``-1`` on
    the worse side, ``0`` when it holds zero or is missing."""
    low, high = row.get(name) or (0.0, 0.0)
    if not _higher_is_better(row):
        low, high = -high, -low
    return 1 if low > 0 else -1 if high < 0 else 0


def closed_form(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The headline rows of the closed-form tasks (VQA, classification, detection, landmark)."""
    return [r for r in rows if r["headline"] and get_task(r["task"]).closed_form]


def improved(row: Mapping[str, Any], before: str, after: str) -> bool:
    """Whether ``after`` beats ``before`` on this row's metric (both present)."""
    old, new = row.get(before), row.get(after)
    if old is None or new is None:
        return False
    return new > old if _higher_is_better(row) else new < old


def _higher_is_better(row: Mapping[str, Any]) -> bool:
    return get_task(row["task"]).metric(row["metric"]).higher_is_better


def print_metric_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    title: str,
    console: Console,
    changes: Sequence[Change] = (),
) -> None:
    """The rows as a table; each of ``changes`` adds a difference column, with the 95%
    interval of a paired bootstrap where the rows carry one: green when ``after`` is better
    beyond doubt (the whole interval), red when worse, yellow when better by the point
    estimate only. Without intervals, green when ``after`` is better. Headline rows are bold."""
    table = Table(title=title)
    for name in ("task", "lang", "metric"):
        table.add_column(name)
    for name in columns:
        table.add_column(name, justify="right")
    for change in changes:
        table.add_column(f"{change.after} - {change.before}", justify="right")
    for row in rows:
        cells = [row["task"], row["lang"], row["metric"]]
        cells += [_number(row.get(name)) for name in columns]
        cells += [_difference(row, change) for change in changes]
        table.add_row(*cells, style="bold" if row["headline"] else None)
    console.print(table)
    console.print(
        "[dim]bold: each task's headline score, answers in the task's own format only; "
        "_lenient: also answers a lenient parser reads; well_formed: share of answers in the "
        "task's format.[/]"
    )
    if any(change.interval in row for change in changes for row in rows):
        console.print(
            "[dim]\\[brackets]: 95% interval of the difference (paired bootstrap over the test "
            "records); [green]green[/green]/[red]red[/red]: better/worse beyond that "
            "interval; [yellow]yellow[/yellow]: better by the point estimate only.[/]"
        )


def _difference(row: Mapping[str, Any], change: Change) -> str:
    old, new = row.get(change.before), row.get(change.after)
    if old is None or new is None:
        return ""
    text = f"{new - old:+.3f}"
    if change.interval not in row:
        return f"[green]{text}[/]" if improved(row, change.before, change.after) else text
    low, high = row[change.interval]
    text = escape(f"{text} [{low:+.3f}, {high:+.3f}]")
    colour = {1: "green", -1: "red"}.get(established(row, change.interval))
    if colour is None and improved(row, change.before, change.after):
        colour = "yellow"
    return f"[{colour}]{text}[/]" if colour else text


def print_answers(answers: Sequence[Mapping[str, Any]], console: Console) -> None:
    """Held-out questions with the expected and the generated answer."""
    table = Table(title="held-out questions answered by the exported model")
    for column in ("lang", "task", "question", "expected", "answer"):
        table.add_column(column, overflow="fold")
    for item in answers:
        table.add_row(
            item["lang"], item["task"], item["question"], item["expected"], item["answer"]
        )
    console.print(table)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
