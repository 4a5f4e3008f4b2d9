"""``fedumit compare``: is federating worth it? Centralized, local-only, federated and federated
with DP, on the same hospitals, model and number of training steps, scored on the pooled
held-out test split.

- ``centralized``: every archive pooled into one site, ``sites`` times the local steps (the
  same number of sampled examples as the federation), no DP.
- ``local-only``: each hospital trains alone on the same schedule; the table shows the mean
  of the local models.
- ``federated``: the consortium without DP; ``federated+dp``: with each site's budget.

Every model answers the same test records, so the federated - centralized difference comes with
the 95% interval of a paired bootstrap over them: with a few dozen records per task and
language, whether federating costs five points is often not settled by one run. ``--seeds N``
trains every arm N times (the data stays the same) and reports the means: on a small
consortium the training seed alone moves a score by more than the target.

The same number of examples is not the same number of steps: the federation averages its
sites' updates once a round, so with three sites it takes a third of the centralized arm's
sequential steps. On PneumoniaMNIST (full splits, no DP) the federated arm answered the majority
class after 45 steps a site (accuracy 0.63, centralized 0.81); given 135 steps a site it
answers 0.78 right, centralized 0.81 and local-only 0.77 (``fedumit compare --dataset
pneumoniamnist``, whose default schedule this is, 26 min), and with DP at epsilon 8 the
majority class, 0.625, while its option AUC rises to 0.83 (0.93 centralized). Give a small
federation more rounds before reading a gap as the cost of federating.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console

from server.run_folder import new_run_id, write_json_atomically
from shared_model.evaluation import score_predictions
from shared_model.option_scores import option_auc
from shared_model.sample import Sample
from shared_model.tasks import Reading, score_rows
from simulations.bootstrap import mean_scores, option_auc_scorer, paired_intervals
from simulations.experiment import (
    REPLAYABLE_NOTE,
    Consortium,
    prepare_consortium,
    run_overrides,
)
from simulations.heldout import ModelAnswers, answer_and_rank, held_out_samples
from simulations.majority import MAJORITY, VS_MAJORITY, add_majority
from simulations.noise_outlook import SIGNAL_SHARE, outlook_line, schedule_forecast
from simulations.pooling import pool_archives
from simulations.report import INTERVAL, Change, add_intervals, closed_form, print_metric_table
from simulations.runner import simulate

CENTRALIZED, LOCAL, FEDERATED, FEDERATED_DP = (
    "centralized",
    "local-only",
    "federated",
    "federated+dp",
)
ARMS = (CENTRALIZED, LOCAL, FEDERATED, FEDERATED_DP)
TARGET_POINTS = 5  # federated should come within this many points of centralized
POOLED_SITE = "all-hospitals"
BESIDE_HEADLINE = ("balanced_accuracy", "option_auc")
"""Plotted beside a closed-form task's headline: whether its answers and its likelihoods read
the images. A model that answers the majority class scores the majority's accuracy, but only
chance here."""


def run_compare(args: argparse.Namespace) -> int:
    """Run the four arms, print and write the table, and draw the plot."""
    console = Console(stderr=args.json)
    console.rule("[bold]FedUMIT compare")
    consortium = prepare_consortium(args, console)
    run_id = new_run_id()
    sites = len(consortium.archives)
    # The folder names the pooled site, and a site's name keys its replayable sampling: a fixed
    # name keeps the centralized arm as reproducible as the others.
    pooled = pool_archives(consortium.archives, consortium.out / "pooled" / run_id / POOLED_SITE)

    seeds = [args.seed + offset for offset in range(args.seeds)]
    outlook = schedule_forecast(args, consortium.archives, consortium.spec, consortium.subspace)
    console.print(REPLAYABLE_NOTE.format(seed=", ".join(map(str, seeds))))

    def arm(name: str, archives: Sequence[Path], dp: bool, seed: int, scale: int = 1) -> Path:
        label = name if len(seeds) == 1 else f"{name}-seed{seed}"
        arm_id = f"{run_id}-{label}"
        configs = consortium.site_configs(
            arm_id, archives, epsilon=args.epsilon, dp=dp, seed=seed, delta=args.delta
        )
        overrides = run_overrides(
            args, consortium, arm_id, sites=len(configs), dp=dp, steps_scale=scale, seed=seed
        )
        console.rule(f"{label}: {len(archives)} site(s), DP {'on' if dp else 'off'}")
        console.print(arm_schedule(overrides))
        if dp:
            console.print(outlook_line(outlook))
        export = simulate(configs, overrides).root / "export"
        if not export.is_dir():
            raise RuntimeError(f"the {label} run stopped early: no export in {export.parent}")
        return export

    central = [arm(CENTRALIZED, [pooled], dp=False, seed=seed, scale=sites) for seed in seeds]
    spec = consortium.spec
    first_arm = central[0].parent.name
    samples = held_out_samples(_site_configs_of(consortium, first_arm), spec)

    def evaluate(export: Path) -> ModelAnswers:
        return answer_and_rank(export, samples, spec)

    evaluations = {CENTRALIZED: [evaluate(export) for export in central]}
    for name, archives, dp in (
        (FEDERATED, consortium.archives, False),
        (FEDERATED_DP, consortium.archives, True),
    ):
        evaluations[name] = [evaluate(arm(name, archives, dp, seed)) for seed in seeds]
    evaluations[LOCAL] = [
        evaluate(arm(f"{LOCAL}-{archive.name}", [archive], dp=False, seed=seed))
        for archive in consortium.archives
        for seed in seeds
    ]
    predictions = {name: [e.readings for e in runs] for name, runs in evaluations.items()}
    rankings = {name: [e.likelihoods for e in runs] for name, runs in evaluations.items()}
    local = predictions.pop(LOCAL)
    rows = comparison_rows(samples, predictions, local, rankings)
    target = against_target(rows)
    report = consortium.out / f"compare-{run_id}"
    summary = {
        "run": run_id,
        "sites": sites,
        "test_records": len(samples),
        "seeds": seeds,
        "noise": "replayable: keyed by each site config's replayable_noise_seed (the seeds)",
        "table": rows,
        "target": target,
        "noise_forecast": outlook.as_dict(SIGNAL_SHARE),
    }
    write_json_atomically(report.with_suffix(".json"), summary)
    plot = draw_comparison(plotted_rows(rows), report.with_suffix(".png"))
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    title = f"test split of {sites} hospitals ({len(samples)} records), {len(seeds)} seed(s)"
    changes = [Change(CENTRALIZED, FEDERATED), Change(MAJORITY, FEDERATED_DP, VS_MAJORITY)]
    print_metric_table(rows, (MAJORITY, *ARMS), title, console, changes)
    console.print(
        f"federated at most {TARGET_POINTS} points below centralized on "
        f"{target['point_estimate']} of {target['rows']} closed-form headline rows by the point "
        f"estimate, on {target['whole_interval']} by the whole 95% interval"
    )
    console.print(f"table: {report.with_suffix('.json')}\nplot: {plot}")
    return 0


def arm_schedule(overrides: Mapping[str, Any]) -> str:
    """One line per stage of an arm's run config: rounds, local steps, patients a step and
    learning rate (the rate may differ between the arms with and without DP)."""
    return "\n".join(
        f"{stage}: {overrides[f'{stage}.rounds']} round(s) of "
        f"{overrides[f'{stage}.local-steps']} steps, {overrides[f'{stage}.batch-size']} "
        f"patients a step, learning rate {overrides[f'{stage}.lr']:g}"
        for stage in ("align", "instruct")
    )


def comparison_rows(
    samples: Sequence[Sample],
    predictions: Mapping[str, Sequence[Sequence[Reading]]],
    local: Sequence[Sequence[Reading]],
    rankings: Mapping[str, Sequence[Sequence[list[float] | None]]] | None = None,
) -> list[dict[str, Any]]:
    """One row per table metric (:func:`shared_model.tasks.score_rows`), one column per arm:
    the mean over the arm's runs (seeds; ``local-only``: every hospital's model of every seed),
    with the paired bootstrap interval of federated - centralized, and the majority-answer
    baseline with the interval of federated+dp - majority. With ``rankings`` (each arm's runs'
    option likelihoods, local-only's under its name), the closed tasks' ``option_auc`` too."""
    columns = {name: _mean_score(samples, runs) for name, runs in predictions.items()}
    columns[LOCAL] = _mean_score(samples, local)
    intervals = paired_intervals(samples, predictions[CENTRALIZED], predictions[FEDERATED])
    for name, runs in (rankings or {}).items():
        columns[name].update(mean_scores([option_auc(samples, run) for run in runs]))
    if rankings:
        intervals.update(
            paired_intervals(
                samples, rankings[CENTRALIZED], rankings[FEDERATED], scorer=option_auc_scorer
            )
        )
    rows = add_intervals(score_rows({name: columns[name] for name in ARMS}), intervals)
    return add_majority(rows, samples, predictions[FEDERATED_DP])


def _mean_score(samples: Sequence[Sample], runs: Sequence[Sequence[Reading]]) -> dict[str, float]:
    return mean_scores([score_predictions(samples, answers) for answers in runs])


def against_target(rows: Sequence[Mapping[str, Any]], points: int = TARGET_POINTS) -> dict:
    """How many headline rows of the closed-form tasks (all 0-1 scores, higher better) have
    federated no more than ``points`` below centralized, by the point estimate and by the whole
    interval."""
    scores = [
        r
        for r in closed_form(rows)
        if r.get(FEDERATED) is not None and r.get(CENTRALIZED) is not None
    ]
    margin = -points / 100.0
    return {
        "points": points,
        "rows": len(scores),
        "point_estimate": sum(r[FEDERATED] - r[CENTRALIZED] >= margin for r in scores),
        "whole_interval": sum(r.get(INTERVAL, (-1.0, 0.0))[0] >= margin for r in scores),
    }


def plotted_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The closed-form tasks' headline rows, each followed by its group's
    :data:`BESIDE_HEADLINE` rows, in table order."""
    groups = {(r["task"], r["lang"]) for r in closed_form(rows)}
    return [
        r
        for r in rows
        if (r["task"], r["lang"]) in groups and (r["headline"] or r["metric"] in BESIDE_HEADLINE)
    ]


def draw_comparison(rows: Sequence[Mapping[str, object]], path: Path) -> Path:
    """Grouped bars: one group per task and language, one bar per arm; a dashed line marks the
    majority-answer baseline where the task has one."""
    figure, axes = plt.subplots(figsize=(max(6.0, 1.4 * len(rows)), 4.0))
    width = 0.8 / len(ARMS)
    for index, name in enumerate(ARMS):
        values = [row.get(name) or 0.0 for row in rows]
        positions = [i + (index - (len(ARMS) - 1) / 2) * width for i in range(len(rows))]
        axes.bar(positions, values, width, label=name)
    baselines = [(i, row[MAJORITY]) for i, row in enumerate(rows) if row.get(MAJORITY) is not None]
    for number, (i, value) in enumerate(baselines):
        label = "majority answer" if number == 0 else None
        axes.hlines(value, i - 0.45, i + 0.45, colors="black", linestyles="dashed", label=label)
    axes.set_xticks(range(len(rows)))
    axes.set_xticklabels([f"{r['task']}/{r['lang']}\n{r['metric']}" for r in rows], fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("score on the test split")
    axes.legend(fontsize=8)
    axes.set_title("closed-form tasks: headline score, balanced accuracy, option AUC", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _site_configs_of(consortium: Consortium, run_id: str) -> list[Path]:
    return sorted((consortium.out / "runs" / run_id / "sites").glob("*.toml"))
