"""Tables a simulation prints: headline metrics per task and language, one column per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

HEADLINE = {
    "vqa": ("closed_accuracy", "open_recall"),
    "classification": ("accuracy", "macro_f1"),
    "report": ("bleu1", "rouge_l"),
    "detection": ("mean_iou", "map50"),
    "landmark": ("sdr", "mre"),
    "caption": ("bleu1", "rouge_l"),
    "compare": ("bleu1", "rouge_l"),
}
CLOSED_FORM = {
    "vqa": ("closed_accuracy",),
    "classification": ("accuracy", "macro_f1"),
    "detection": ("mean_iou", "map50"),
    "landmark": ("sdr", "mre"),
}
LOWER_IS_BETTER = {"mre"}


def metric_rows(columns: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """One row per headline ``task/lang/metric`` found in any column, with each column's value."""
    keys = sorted({key for metrics in columns.values() for key in metrics})
    rows = []
    for key in keys:
        task, lang, metric = key.split("/")
        if metric in HEADLINE.get(task, ()):
            row: dict[str, Any] = {"task": task, "lang": lang, "metric": metric}
            row.update({name: metrics.get(key) for name, metrics in columns.items()})
            rows.append(row)
    return rows


def add_intervals(
    rows: Sequence[dict[str, Any]], intervals: Mapping[str, tuple[float, float]]
) -> list[dict[str, Any]]:
    """Each row with the interval of its ``task/lang/metric`` difference, where there is one."""
    for row in rows:
        interval = intervals.get(f"{row['task']}/{row['lang']}/{row['metric']}")
        if interval is not None:
            row["interval"] = [round(interval[0], 4), round(interval[1], 4)]
    return list(rows)


def established(row: Mapping[str, Any]) -> int:
    """``1`` when the row's interval lies wholly on the better side of zero, ``-1`` on the
    worse side, ``0`` when it holds zero or is missing."""
    low, high = row.get("interval") or (0.0, 0.0)
    if row["metric"] in LOWER_IS_BETTER:
        low, high = -high, -low
    return 1 if low > 0 else -1 if high < 0 else 0


def closed_form(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of the closed-form tasks' metrics (accuracy, F1, IoU, mAP, radial error)."""
    return [r for r in rows if r["metric"] in CLOSED_FORM.get(r["task"], ())]


def improved(row: Mapping[str, Any], before: str, after: str) -> bool:
    """Whether ``after`` beats ``before`` on this row's metric (both present)."""
    old, new = row.get(before), row.get(after)
    if old is None or new is None:
        return False
    return new < old if row["metric"] in LOWER_IS_BETTER else new > old


def print_metric_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    title: str,
    console: Console,
    change: tuple[str, str] | None = None,
) -> None:
    """The rows as a table; with ``change=(before, after)`` a difference column, with the 95%
    interval of a paired bootstrap where the rows carry one: green when ``after`` is better
    beyond doubt (the whole interval), red when worse, yellow when better by the point
    estimate only. Without intervals, green when ``after`` is better."""
    table = Table(title=title)
    for name in ("task", "lang", "metric"):
        table.add_column(name)
    for name in columns:
        table.add_column(name, justify="right")
    if change:
        table.add_column(f"{change[1]} - {change[0]}", justify="right")
    for row in rows:
        cells = [row["task"], row["lang"], row["metric"]]
        cells += [_number(row.get(name)) for name in columns]
        if change:
            cells.append(_difference(row, *change))
        table.add_row(*cells)
    console.print(table)
    if change and any("interval" in row for row in rows):
        console.print(
            "[dim]\\[brackets]: 95% interval of the difference (paired bootstrap over the test "
            "records); [green]green[/green]/[red]red[/red]: better/worse beyond that "
            "interval; [yellow]yellow[/yellow]: better by the point estimate only.[/]"
        )


def _difference(row: Mapping[str, Any], before: str, after: str) -> str:
    old, new = row.get(before), row.get(after)
    if old is None or new is None:
        return ""
    text = f"{new - old:+.3f}"
    if "interval" not in row:
        return f"[green]{text}[/]" if improved(row, before, after) else text
    low, high = row["interval"]
    text = escape(f"{text} [{low:+.3f}, {high:+.3f}]")
    colour = {1: "green", -1: "red"}.get(established(row))
    if colour is None and improved(row, before, after):
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
