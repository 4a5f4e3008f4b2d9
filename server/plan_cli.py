"""``fedumit plan``: each site's noise at a schedule and budget, and what it leaves of the signal.

Before a consortium trains, its coordinator (or a researcher deciding whether to federate)
knows the sites' sizes roughly and chooses the schedule; each site's sigma follows from them
and its budget (:mod:`client.privacy.forecast`). The noised dimensions are given
(``--dimensions``), counted from a model spec's stage (``--model-spec``: its trainable adapter
parameters, from the base's config alone, so a 2B base costs what the tiny one does) or the
gradient subspace's (``--subspace``: the noise lies in its directions only).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from client.privacy.forecast import Forecast


def add_plan_command(commands: argparse._SubParsersAction) -> None:
    """Register ``fedumit plan``."""
    plan = commands.add_parser(
        "plan",
        help="each site's noise at a schedule and privacy budget, and the signal it leaves",
        description="Each site's noise multiplier at a schedule and privacy budget, the noise "
        "a step's mean gradient carries (in clipping norms), and what it leaves of a consistent "
        "signal: an estimate before anyone trains (client/privacy/forecast.py).",
    )
    plan.add_argument(
        "--patients", type=int, nargs="+", required=True, help="patients at each site"
    )
    plan.add_argument(
        "--batch", type=float, required=True, help="expected patients a step at each site"
    )
    plan.add_argument(
        "--steps", type=int, required=True, help="steps each site trains, over every stage"
    )
    noised = plan.add_mutually_exclusive_group(required=True)
    noised.add_argument("--dimensions", type=int, help="trainable parameters the noise lies in")
    noised.add_argument(
        "--model-spec", type=Path, help="count them: the trainable parameters of --stage"
    )
    noised.add_argument(
        "--subspace", type=int, help="directions of the gradient subspace the noise lies in"
    )
    plan.add_argument(
        "--stage",
        choices=("align", "instruct"),
        default="instruct",
        help="the stage whose parameters --model-spec counts (default: instruct)",
    )
    plan.add_argument("--epsilon", type=float, help="each site's budget (default: a site's, 8)")
    plan.add_argument("--delta", type=float, help="each site's delta (default: a site's, 1e-5)")
    plan.add_argument(
        "--signal",
        type=float,
        default=0.1,
        help="the share of the clipping norm a step's mean clipped gradient keeps, for the "
        "steps a signal of that size needs to match the noise (default 0.1)",
    )
    plan.add_argument("--json", action="store_true", help="print the forecast as JSON")
    plan.set_defaults(handler=_plan)


def noised_dimensions(args: argparse.Namespace) -> int:
    """The dimensions the noise lies in, from whichever option gave them."""
    if args.model_spec is None:
        return args.dimensions if args.dimensions is not None else args.subspace
    from shared_model.loading import stage_parameter_count
    from shared_model.spec import ModelSpec

    return stage_parameter_count(ModelSpec.from_toml(args.model_spec), args.stage)


def print_forecast(result: Forecast, signal: float, console: Console) -> None:
    """The table of sites and the federation, then what it means for a signal of ``signal``."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"epsilon {result.epsilon:g} at delta {result.delta:g} a site over {result.steps} "
        f"steps, noise in {result.dimensions:,} dimensions (norms in clipping norms)",
        box=box.SIMPLE_HEAD,
    )
    for column in ("", "patients", "rate", "sigma", "noise a step", "S/N at clip"):
        table.add_column(column, justify="right" if column else "left")
    table.add_column(f"S/N at {signal:g}", justify="right")
    rows = result.as_dict(signal)
    for number, site in enumerate(rows["sites"], 1):
        table.add_row(
            f"site {number}",
            str(site["patients"]),
            f"{site['sample_rate']:.3f}",
            f"{site['noise_multiplier']:.2f}",
            *_ratios(site),
        )
    federation = rows["federation"]
    patients = sum(site["patients"] for site in rows["sites"])
    table.add_row("federation", str(patients), "", "", *_ratios(federation))
    console.print(table)
    needed = math.ceil(federation["steps_to_match"])
    console.print(
        f"A consistent signal of {signal:g} clipping norms a step reaches the federation's noise "
        f"after {needed:,} step{'s' if needed > 1 else ''} at this noise ({result.steps} planned). "
        "A ratio far below 1 at the clipping norm means nothing can be learned at this budget "
        "and these sizes."
    )


def _ratios(row: dict) -> tuple[str, str, str]:
    """A forecast row's noise a step and its two signal-to-noise ratios, as table cells."""
    keys = ("noise_norm", "signal_to_noise_at_clip", "signal_to_noise")
    return tuple(f"{row[key]:.3g}" for key in keys)


def _plan(args: argparse.Namespace) -> int:
    for name in ("dimensions", "subspace"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 0 < args.signal <= 1:
        raise SystemExit(f"--signal is a share of the clipping norm in (0, 1], got {args.signal}")
    from rich.console import Console

    from client.config import Policy
    from client.privacy.forecast import forecast

    try:
        result = forecast(
            args.patients,
            batch=args.batch,
            steps=args.steps,
            dimensions=noised_dimensions(args),
            epsilon=Policy.max_epsilon if args.epsilon is None else args.epsilon,
            delta=Policy.delta if args.delta is None else args.delta,
        )
    except ValueError as error:
        raise SystemExit(f"cannot plan: {error}") from error
    if args.json:
        print(json.dumps(result.as_dict(args.signal), indent=2))
    else:
        print_forecast(result, args.signal, Console())
    return 0
