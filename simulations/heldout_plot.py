"""The held-out test in one picture: each task and language's judged score, before and after.

One pair of bars per task and language (the score :mod:`simulations.verdict` judges it by: the
closed-form tasks' headline, report BLEU-1), the base at round 0 beside the exported model, an
error bar on the exported model's bar spanning the 95 % interval of the difference (placed on
the base's score, so a bar whose interval clears the base's is an improvement beyond doubt),
and the majority answer's score as a dashed line where the task has one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from simulations.majority import MAJORITY
from simulations.report import INTERVAL, established
from simulations.verdict import judged_rows

COLOURS = {1: "tab:green", -1: "tab:red", 0: "tab:grey"}
"""The exported model's bar by :func:`~simulations.report.established`: better, worse, neither."""


def draw_heldout(
    rows: Sequence[Mapping[str, Any]], before: str, after: str, path: Path
) -> Path | None:
    """Draw the judged rows of a round-0-vs-final table to ``path``; ``None`` when the table
    has no judged row (a dataset of free-text tasks other than report)."""
    judged = [
        r for r in judged_rows(rows) if r.get(before) is not None and r.get(after) is not None
    ]
    if not judged:
        return None
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(judged) + 2.0), 4.0))
    positions = range(len(judged))
    base_scores = [r[before] for r in judged]
    axes.bar([p - 0.2 for p in positions], base_scores, 0.4, color="tab:blue", label="round 0")
    for position, row in zip(positions, judged, strict=True):
        low, high = row.get(INTERVAL) or (0.0, 0.0)
        label = "exported model" if position == 0 else None
        colour = COLOURS[established(row, INTERVAL)]
        axes.bar(position + 0.2, row[after], 0.4, color=colour, label=label)
        middle, half = row[before] + (low + high) / 2, (high - low) / 2
        axes.errorbar(position + 0.2, middle, yerr=half, color="black", capsize=3, linewidth=1)
        if row.get(MAJORITY) is not None:
            axes.hlines(row[MAJORITY], position - 0.45, position + 0.45, "black", "dashed")
    axes.set_xticks(list(positions))
    axes.set_xticklabels([f"{r['task']}/{r['lang']}\n{r['metric']}" for r in judged], fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("score on the test split")
    axes.set_title(
        "exported model (green/red: better/worse beyond the 95% interval; error bar: base + "
        "interval of the difference; dashed: majority answer)",
        fontsize=8,
    )
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
