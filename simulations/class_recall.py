"""Which classes a model names: each class's recall, and what the model answered instead.

Accuracy over a test split hides a class the model never names when the other classes carry the
score; a researcher asks for the confusion first. Classes are keyed by their option's name in
the record's language, so records with different option lists still share a row per name.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from shared_model.sample import Sample
from shared_model.tasks import Reading, get_task

TASK = "classification"
MALFORMED = "(not in format)"


def class_recall(
    samples: Sequence[Sample], models: dict[str, Sequence[Reading]]
) -> list[dict[str, Any]]:
    """Per language and true class of the classification records (in option order): how many
    there are, each model's recall (strict readings) and what the last model answered, by
    option name."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    answered: dict[tuple[str, str], Counter] = defaultdict(Counter)
    order: dict[tuple[str, str], tuple[str, int]] = {}  # by language, then option number
    last = list(models)[-1]
    for index, sample in enumerate(samples):
        if sample.task != TASK:
            continue
        options = list(sample.fields["options"])
        truth = get_task(TASK).reference(sample.fields)
        key = (sample.lang, options[truth])
        row = rows.setdefault(key, {"lang": key[0], "class": key[1], "records": 0})
        order.setdefault(key, (sample.lang, truth))
        row["records"] += 1
        for name, readings in models.items():
            row[name] = row.get(name, 0) + (readings[index].strict == truth)
        said = models[last][index].strict
        answered[key][MALFORMED if said is None else options[said]] += 1
    for key, row in rows.items():
        for name in models:
            row[name] = round(row[name] / row["records"], 4)
        row["answered"] = dict(answered[key].most_common())
    return [rows[key] for key in sorted(rows, key=lambda key: (*order[key], key[1]))]


def print_class_recall(
    rows: Sequence[dict[str, Any]], models: Sequence[str], console: Console
) -> None:
    """The rows as a table: recall per model, and the last model's answers."""
    table = Table(title="classification: each class's recall, and what the final model answered")
    for name in ("lang", "class", "records", *(f"recall {m}" for m in models), "answered"):
        table.add_column(name, justify="right" if name != "answered" else "left")
    for row in rows:
        said = ", ".join(f"{name} {count}" for name, count in row["answered"].items())
        recalls = [f"{row[m]:.2f}" for m in models]
        table.add_row(row["lang"], row["class"], str(row["records"]), *recalls, said)
    console.print(table)
