"""Plots of a run, drawn from its ``metrics.jsonl``: loss and eval metrics per round and stage,
and each site's privacy spend."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HEADLINE_METRICS = (
    "closed_accuracy",
    "accuracy",
    "open_recall",
    "bleu4",
    "rouge_l",
    "map50",
    "sdr",
)


def draw_run_plots(records: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write ``training.png`` and ``privacy.png`` for a run's metric records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not records:
        return []
    return [
        _training(records, out_dir / "training.png"),
        _privacy(records, out_dir / "privacy.png"),
    ]


def _x(records: Sequence[dict[str, Any]]) -> list[str]:
    return [f"{r['stage'][:1].upper()}{r['round']}" for r in records]


def _training(records: Sequence[dict[str, Any]], path: Path) -> Path:
    figure, (loss_axis, eval_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = _x(records)
    loss_axis.plot(labels, [r.get("train_loss", float("nan")) for r in records], marker="o")
    loss_axis.set_title("mean train loss of the sites (A = align, I = instruct)")
    loss_axis.set_xlabel("stage and round")
    series: dict[str, list[float]] = defaultdict(lambda: [float("nan")] * len(records))
    for position, record in enumerate(records):
        for key, value in record.get("eval", {}).items():
            task, lang, metric = key.split("/")
            if metric in HEADLINE_METRICS:
                series[f"{task} {lang} {metric}"][position] = value
    colours = plt.get_cmap("tab20").colors  # the default cycle repeats after ten lines
    for index, (name, values) in enumerate(sorted(series.items())):
        evaluated = [(i, v) for i, v in enumerate(values) if not math.isnan(v)]
        style = "-" if index < len(colours) else "--"
        eval_axis.plot(
            *zip(*evaluated, strict=True),
            marker=".",
            label=name,
            color=colours[index % len(colours)],
            linestyle=style,
        )
    eval_axis.set_xticks(range(len(labels)), labels)  # a line joins the rounds evaluated
    eval_axis.set_title("federated evaluation (val splits)")
    eval_axis.set_ylim(-0.02, 1.02)
    if series:
        eval_axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _privacy(records: Sequence[dict[str, Any]], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4))
    labels = _x(records)
    sites = sorted({s for r in records for s in r.get("epsilon", {})})
    for site in sites:
        values = [r.get("epsilon", {}).get(site, float("nan")) for r in records]
        axis.plot(labels, values, marker="o", label=f"site {site}")
    axis.set_title("cumulative privacy spend per site (epsilon)")
    axis.set_xlabel("stage and round")
    if sites:
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
