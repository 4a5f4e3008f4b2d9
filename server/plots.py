"""Plots of a run, drawn from its ``metrics.jsonl``: loss, each task's headline score and the
share of well-formed answers per task and language, per round and stage; each site's privacy
spend."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from shared_model.tasks import get_task, split_key
from shared_model.tasks.scoring import WELL_FORMED


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


def eval_series(records: Sequence[dict[str, Any]], headline: bool) -> dict[str, list[float]]:
    """Per ``task lang metric``, its value in each record (NaN where not evaluated): each task's
    headline score, or (``headline`` False) its share of well-formed answers."""
    series: dict[str, list[float]] = defaultdict(lambda: [float("nan")] * len(records))
    for position, record in enumerate(records):
        for key, value in record.get("eval", {}).items():
            parts = split_key(key)
            if parts is None:
                continue
            task, lang, metric = parts
            if metric == (get_task(task).headline if headline else WELL_FORMED):
                series[f"{task} {lang} {metric}"][position] = value
    return dict(series)


def _training(records: Sequence[dict[str, Any]], path: Path) -> Path:
    figure, (loss_axis, score_axis, form_axis) = plt.subplots(1, 3, figsize=(17, 4.5))
    labels = _x(records)
    loss_axis.plot(labels, [r.get("train_loss", float("nan")) for r in records], marker="o")
    loss_axis.set_title("mean train loss of the sites (A = align, I = instruct)")
    loss_axis.set_xlabel("stage and round")
    titles = ("headline score per task (val splits)", "share of well-formed answers (val splits)")
    for axis, headline, title in zip((score_axis, form_axis), (True, False), titles, strict=True):
        _draw_series(axis, eval_series(records, headline), labels)
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _draw_series(axis: Any, series: dict[str, list[float]], labels: Sequence[str]) -> None:
    """One line per series joining the rounds evaluated, 0-1 axis, legend when any."""
    colours = plt.get_cmap("tab20").colors  # the default cycle repeats after ten lines
    for index, (name, values) in enumerate(sorted(series.items())):
        evaluated = [(i, v) for i, v in enumerate(values) if not math.isnan(v)]
        style = "-" if index < len(colours) else "--"
        axis.plot(
            *zip(*evaluated, strict=True),
            marker=".",
            label=name,
            color=colours[index % len(colours)],
            linestyle=style,
        )
    axis.set_xticks(range(len(labels)), labels)
    axis.set_ylim(-0.02, 1.02)
    if series:
        axis.legend(fontsize=7, loc="best")


def _privacy(records: Sequence[dict[str, Any]], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4))
    labels = _x(records)
    sites = sorted({s for r in records for s in r.get("epsilon", {})})
    for site in sites:
        values = [r.get("epsilon", {}).get(site, float("nan")) for r in records]
        axis.plot(labels, values, marker="o", label=site)
    axis.set_title("cumulative privacy spend per site (epsilon)")
    axis.set_xlabel("stage and round")
    if sites:
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
