"""Which classes a model names: each class's recall, and what the model answered instead.

Accuracy over a test split hides a class the model never names when the other classes carry the
score; a researcher asks for the confusion first. Classes are keyed by their option's name in
the record's language, so records with different option lists still share a row per name.

Where the test split holds reports written as the synthetic hospitals write them (the finding
named after ``Impression:`` or ``印象：``), each row also says how often each model's report on
an image of that class names it: a model can name a class in its reports that its
classification answers never name, so the images carry the class and the answer does not.
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
REPORT = "report"
IMPRESSION = {"en": "Impression:", "zh": "印象："}
"""Where the synthetic hospitals' reports name their finding, in the class's own option name
(``Findings: a cyst in the left lung. Impression: cyst.``; :mod:`simulations.synthetic`)."""


def impression(text: str | None, lang: str) -> str | None:
    """The finding a report in the synthetic hospitals' template names (``cyst`` for
    ``... Impression: cyst.``); ``None`` for no report or another template."""
    marker = IMPRESSION.get(lang)
    if not text or not marker or marker not in text:
        return None
    return text.rsplit(marker, 1)[1].strip().rstrip(".。").strip() or None


def class_recall(
    samples: Sequence[Sample], models: dict[str, Sequence[Reading]]
) -> list[dict[str, Any]]:
    """Per language and true class of the classification records (in option order): how many
    there are, each model's recall (strict readings) and what the last model answered, by
    option name; with report records of the class (:func:`impression`), how many and the share
    each model's well-formed report names it (``{model} in reports``)."""
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
    for index, sample in enumerate(samples):
        key = (sample.lang, impression(sample.fields.get("report"), sample.lang) or "")
        if sample.task != REPORT or key not in rows:
            continue
        row = rows[key]
        row["reports"] = row.get("reports", 0) + 1
        for name, readings in models.items():
            named = impression(readings[index].strict, sample.lang) == key[1]
            row[f"{name} in reports"] = row.get(f"{name} in reports", 0) + named
    for key, row in rows.items():
        for name in models:
            row[name] = round(row[name] / row["records"], 4)
            if row.get("reports"):
                row[f"{name} in reports"] = round(row[f"{name} in reports"] / row["reports"], 4)
        row["answered"] = dict(answered[key].most_common())
    return [rows[key] for key in sorted(rows, key=lambda key: (*order[key], key[1]))]


def print_class_recall(
    rows: Sequence[dict[str, Any]], models: Sequence[str], console: Console
) -> None:
    """The rows as a table: recall per model, the last model's answers and, where there are
    reports, how often each model's reports name the class."""
    reports = any("reports" in row for row in rows)
    table = Table(
        title="classification: each class's recall, and what the final model answered",
        caption="reports: the class's report records; named: the share of them whose model "
        "report, well-formed, names the class"
        if reports
        else None,
    )
    beside_columns = ["reports", *(f"named {m}" for m in models)] if reports else []
    for name in ("lang", "class", "records", *(f"recall {m}" for m in models), "answered"):
        table.add_column(name, justify="right" if name != "answered" else "left")
    for name in beside_columns:
        table.add_column(name, justify="right")
    for row in rows:
        said = ", ".join(f"{name} {count}" for name, count in row["answered"].items())
        recalls = [f"{row[m]:.2f}" for m in models]
        named = [f"{row[f'{m} in reports']:.2f}" if row.get("reports") else "-" for m in models]
        beside = [str(row.get("reports", 0)), *named] if reports else []
        table.add_row(row["lang"], row["class"], str(row["records"]), *recalls, said, *beside)
    console.print(table)
