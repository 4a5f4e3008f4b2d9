"""``fedumit warm-start``: a base fine-tuned on public records, before a consortium trains."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_warm_start_command(commands: argparse._SubParsersAction) -> None:
    """Register ``fedumit warm-start``."""
    from server.warm_start import WarmStart

    default = WarmStart()
    command = commands.add_parser(
        "warm-start",
        help="fine-tune a base on public records, without DP, before a consortium trains",
        description="Train the instruct adapter of a model spec on a public archive's training "
        "records without noise, merge it and write the result as a new base with its spec "
        "beside it, for the sites' [model] spec (server/warm_start.py). Public records only: "
        "no site's record is read and no site's budget is spent.",
    )
    command.add_argument("--model-spec", type=Path, required=True, help="the base's model spec")
    command.add_argument(
        "--public-archive",
        type=Path,
        required=True,
        help="an archive of public records in the site archive's format",
    )
    command.add_argument("--out", type=Path, required=True, help="the new base's directory")
    command.add_argument(
        "--steps",
        type=int,
        default=default.steps,
        help="noise-free steps; more pay over a larger public archive and overfit a small one "
        "(benchmarks/warm_start_sweep.py measures both on a held-out split)",
    )
    command.add_argument(
        "--batch", type=int, default=default.batch, help="expected patients a step"
    )
    command.add_argument("--lr", type=float, default=default.learning_rate)
    command.add_argument(
        "--seed",
        type=int,
        default=default.seed,
        help="keys the adapter's initialisation and the sampling",
    )
    command.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    command.set_defaults(handler=_warm_start)


def _warm_start(args: argparse.Namespace) -> int:
    from server.warm_start import WarmStart, warm_start
    from shared_model.spec import SPEC_FILE, ModelSpec

    try:
        settings = WarmStart(args.steps, args.batch, args.lr, args.seed)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    warmed = warm_start(
        ModelSpec.from_toml(args.model_spec),
        args.public_archive,
        args.out,
        settings,
        device=args.device,
    )
    print(f"warm-started base: {warmed.base}\nits model spec: {warmed.base / SPEC_FILE}")
    return 0
