"""``fedumit simulate``: a consortium of virtual hospitals on one machine, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

from server.config import RUN_DEFAULTS
from simulations.datasets import PARTITIONS, PUBLIC_DATASETS

DATASETS = ("synthetic", *PUBLIC_DATASETS)
DEMO_EPSILON = 1000.0  # per-site budget of the default run: a demonstration, and it says so


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``simulate`` and ``compare``."""
    simulate = commands.add_parser(
        "simulate",
        help="simulate a consortium: data, both stages with DP, export, bilingual answers",
    )
    add_consortium_arguments(simulate)
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
    simulate.add_argument("--patients", type=int, default=36, help="patients per hospital")
    simulate.add_argument("--align-rounds", type=int, default=2)
    simulate.add_argument("--instruct-rounds", type=int, default=3)
    simulate.add_argument("--align-steps", type=int, default=10, help="local steps per round")
    simulate.add_argument("--instruct-steps", type=int, default=60, help="local steps per round")
    simulate.add_argument("--align-lr", type=float, default=RUN_DEFAULTS["align.lr"])
    simulate.add_argument("--instruct-lr", type=float, default=4e-3)
    simulate.add_argument(
        "--eval-every", type=int, default=3, help="federated evaluation every k rounds"
    )
    simulate.add_argument("--dp", action=argparse.BooleanOptionalAction, default=True)
    simulate.add_argument(
        "--epsilon",
        type=float,
        default=DEMO_EPSILON,
        help=(
            "each site's budget (default: a demonstration budget; DP noise on a few dozen "
            "patients per site drowns the signal at epsilon 8: compare shows the cost)"
        ),
    )
    simulate.add_argument("--aggregation", default="fedavg")
    simulate.add_argument(
        "--base",
        type=Path,
        default=None,
        help="a local Qwen2-VL checkpoint (default: the embedded tiny base)",
    )
    simulate.add_argument(
        "--out",
        type=Path,
        default=Path("simulation"),
        help="folder for archives, site configs, runs and the export",
    )
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--json", action="store_true", help="print the final table as JSON")


def _simulate(args: argparse.Namespace) -> int:
    from simulations.experiment import run_experiment

    return run_experiment(args)


def _compare(args: argparse.Namespace) -> int:
    from simulations.compare import run_compare

    return run_compare(args)
