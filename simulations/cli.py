"""``fedumit simulate``: a consortium of virtual hospitals on one machine, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared_model.tasks import STAGE_TASKS
from simulations.datasets import PARTITIONS, PUBLIC_DATASETS
from simulations.defaults import (
    DATASET_DEFAULTS,
    OTHER_DATA_DEFAULTS,
    SIMULATION_DEFAULTS,
    fill_schedule_defaults,
)

DATASETS = ("synthetic", *PUBLIC_DATASETS)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``simulate``, ``compare`` and ``seeds``."""
    simulate = commands.add_parser(
        "simulate",
        help="simulate a consortium: data, both stages with DP, export, bilingual answers",
    )
    add_consortium_arguments(simulate)
    simulate.add_argument(
        "--test-per-group",
        type=int,
        default=None,
        help="held-out test records scored per task and language, spread over the sites "
        "(default: every record of the test split)",
    )
    simulate.set_defaults(handler=_simulate)
    compare = commands.add_parser(
        "compare",
        help="centralized vs local-only vs federated vs federated+DP on the same data and steps",
    )
    add_consortium_arguments(compare)
    compare.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train every arm this many times (training seeds seed, seed+1, ...; the data "
        "stays the same) and average: one run's arms can differ by more than the target",
    )
    compare.set_defaults(handler=_compare)
    seeds = commands.add_parser(
        "seeds",
        help="several simulate runs side by side: how often each score clears its interval",
    )
    seeds.add_argument(
        "runs",
        nargs="+",
        type=Path,
        help="fedumit simulate --out folders, run folders or their summary.json files",
    )
    seeds.add_argument("--json", action="store_true", help="print the comparison as JSON")
    seeds.set_defaults(handler=_seeds)


def add_tasks_argument(parser: argparse.ArgumentParser, trained: str) -> None:
    """``--tasks``: the ``instruct`` tasks whose records are trained (``trained`` says where),
    so that they get every step; default: every task."""
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=STAGE_TASKS["instruct"],
        default=None,
        help=f"the instruct tasks {trained}, so that they get every step of the budget; "
        "default: every task. The held-out records of every task are still scored",
    )


def add_consortium_arguments(simulate: argparse.ArgumentParser) -> None:
    """The options shared by ``simulate`` and ``compare``: data, schedule, privacy, output."""
    simulate.add_argument("--dataset", choices=DATASETS, default="synthetic")
    simulate.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder holding the public datasets (default: ../shared/data)",
    )
    simulate.add_argument(
        "--partition",
        choices=PARTITIONS,
        default="iid",
        help="how a public dataset's patients are split across the hospitals",
    )
    simulate.add_argument(
        "--alpha", type=float, default=0.5, help="Dirichlet concentration (--partition dirichlet)"
    )
    simulate.add_argument(
        "--limit", type=int, default=None, help="at most this many items per split of a dataset"
    )
    simulate.add_argument(
        "--archives",
        type=Path,
        nargs="+",
        default=None,
        help="existing site archives (manifest format), one hospital each",
    )
    simulate.add_argument("--sites", type=int, default=3, help="virtual hospitals")
    add_tasks_argument(simulate, "every site trains (its [policy] tasks, beside stage 1's)")
    simulate.add_argument(
        "--patients",
        type=int,
        default=SIMULATION_DEFAULTS["patients"],
        help="patients of the middle synthetic hospital (the others have 0.7x and 1.3x)",
    )
    for stage in ("align", "instruct"):
        simulate.add_argument(f"--{stage}-rounds", type=int, help=_default(f"{stage}.rounds"))
        simulate.add_argument(
            f"--{stage}-steps",
            type=int,
            help="local DP-SGD steps per round" + _default(f"{stage}.steps", ";"),
        )
        simulate.add_argument(
            f"--{stage}-batch",
            type=int,
            help="expected patients per step (Poisson sampling at rate batch / patients)"
            + _default(f"{stage}.batch", ";"),
        )
        simulate.add_argument(f"--{stage}-lr", type=float, help=_default(f"{stage}.lr"))
    simulate.add_argument(
        "--max-grad-norm",
        type=float,
        help="DP-SGD clipping norm of each patient's gradient" + _default("max-grad-norm", ";"),
    )
    simulate.add_argument(
        "--export-average-rounds",
        type=int,
        help="export the instruct adapter as the mean of its last k rounds' global adapters"
        + _default("export-average-rounds", ";"),
    )
    simulate.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="federated evaluation every k rounds (0: at the end of each stage only)",
    )
    simulate.add_argument("--dp", action=argparse.BooleanOptionalAction, default=True)
    simulate.add_argument(
        "--subspace",
        type=int,
        help="DP noise in this many directions of public records' gradients (0: on every "
        "parameter; not with --archives)" + _default("subspace", ";"),
    )
    simulate.add_argument(
        "--contrast",
        type=float,
        default=SIMULATION_DEFAULTS["contrast"],
        help="each training record's loss minus this multiple of its loss over a public image "
        "(0: off; not with --archives)" + _default("contrast", ";"),
    )
    simulate.add_argument(
        "--balance-answers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sites weigh each closed question's answer classes the same in training, from "
        "their answer counts released under DP ([policy] balance_answers)"
        + _default("balance-answers", ";"),
    )
    simulate.add_argument(
        "--warm-start",
        type=int,
        help="noise-free steps of the base's instruct adapter over public records of the "
        "hospitals' kind before the consortium trains (0: off; not with --archives; "
        "server/warm_start.py)" + _default("warm-start", ";"),
    )
    simulate.add_argument(
        "--public-patients",
        type=int,
        help="train patients of a public dataset given to no hospital, the public records of "
        "the hospitals' kind that --subspace, --contrast and --warm-start read (at most a "
        "quarter of its train patients)" + _default("public-patients", ";"),
    )
    simulate.add_argument(
        "--epsilon", type=float, default=8.0, help="each site's privacy budget (epsilon)"
    )
    simulate.add_argument("--delta", type=float, default=1e-5, help="each site's delta")
    simulate.add_argument("--aggregation", default="fedavg")
    simulate.add_argument(
        "--base",
        type=Path,
        default=None,
        help="a local Qwen2-VL checkpoint, with the model spec beside it when it has one "
        "(default: the embedded tiny base)",
    )
    simulate.add_argument(
        "--out",
        type=Path,
        default=Path("simulation"),
        help="folder for archives, site configs, runs and the export",
    )
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--json", action="store_true", help="print the final table as JSON")


def _default(key: str, separator: str = "") -> str:
    """The help text's note of ``key``'s default, and of the datasets whose default differs
    (a learning rate's with DP as well)."""
    dp_key = key.removesuffix(".lr") + ".dp-lr"
    differing = [
        f"{dataset}{' with DP' if name == dp_key else ''} {values[name]:g}"
        for dataset, values in DATASET_DEFAULTS.items()
        for name in (key, dp_key)
        if name in values
    ]
    if key in OTHER_DATA_DEFAULTS:
        differing.insert(0, f"{OTHER_DATA_DEFAULTS[key]:g} over a public dataset or --archives")
    note = f"default {SIMULATION_DEFAULTS[key]:g}" + "".join(f", {d}" for d in differing)
    return f"{separator} {note}" if separator else note


def _simulate(args: argparse.Namespace) -> int:
    from simulations.experiment import run_experiment

    return run_experiment(fill_schedule_defaults(args))


def _compare(args: argparse.Namespace) -> int:
    from simulations.compare import run_compare

    return run_compare(fill_schedule_defaults(args))


def _seeds(args: argparse.Namespace) -> int:
    from simulations.seeds import run_seeds

    return run_seeds(args.runs, args.json)
