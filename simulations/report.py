"""What a simulation prints at the end: per task and language, the last round against round 0,
and a few held-out answers in English and Chinese from the exported model."""

from __future__ import annotations

from collections.abc import Sequence
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
    "vqa": "closed_accuracy",
    "classification": "accuracy",
    "detection": "mean_iou",
    "landmark": "sdr",
}


def final_table(records: Sequence[dict[str, Any]], stage: str = "instruct") -> list[dict[str, Any]]:
    """Rows (task, language, metric, round 0, last round) from a run's metrics records."""
    evaluated = [r for r in records if r.get("stage") == stage and r.get("eval")]
    if not evaluated:
        return []
    first, last = evaluated[0], evaluated[-1]
    rows = []
    for key in sorted(last["eval"]):
        task, lang, metric = key.split("/")
        if metric in HEADLINE.get(task, ()):
            rows.append(
                {
                    "task": task,
                    "lang": lang,
                    "metric": metric,
                    "round_0": first["eval"].get(key),
                    "final": last["eval"][key],
                    "final_round": last["round"],
                }
            )
    return rows


def print_final_table(rows: Sequence[dict[str, Any]], console: Console) -> None:
    """The rows as a table; closed-form metrics that improved are marked."""
    table = Table(title="federated evaluation on the sites' val splits: round 0 vs last round")
    for column in ("task", "lang", "metric", "round 0", "last", "change"):
        table.add_column(
            column, justify="right" if column in ("round 0", "last", "change") else "left"
        )
    for row in rows:
        before, after = row["round_0"], row["final"]
        change = "" if before is None else f"{after - before:+.3f}"
        better = before is not None and (
            after < before if row["metric"] == "mre" else after > before
        )
        style = "green" if better else ""
        table.add_row(
            row["task"],
            row["lang"],
            row["metric"],
            "-" if before is None else f"{before:.3f}",
            f"{after:.3f}",
            f"[{style}]{change}[/]" if style else change,
        )
    console.print(table)


def print_answers(answers: Sequence[dict[str, Any]], console: Console) -> None:
    """Held-out questions with the expected and the generated answer."""
    table = Table(title="held-out questions answered by the exported model")
    for column in ("lang", "task", "question", "expected", "answer"):
        table.add_column(column, overflow="fold")
    for item in answers:
        table.add_row(
            item["lang"], item["task"], item["question"], item["expected"], item["answer"]
        )
    console.print(table)
