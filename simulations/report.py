"""Tables a simulation prints: headline metrics per task and language, one column per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
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
    """The rows as a table; with ``change=(before, after)`` a difference column, green when
    ``after`` is better."""
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
            old, new = row.get(change[0]), row.get(change[1])
            difference = "" if old is None or new is None else f"{new - old:+.3f}"
            cells.append(f"[green]{difference}[/]" if improved(row, *change) else difference)
        table.add_row(*cells)
    console.print(table)


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
