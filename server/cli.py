"""Coordinator commands: ``fedumit export`` and ``fedumit plan``."""

from __future__ import annotations

import argparse
from pathlib import Path

from server.plan_cli import add_plan_command
from server.warm_start_cli import add_warm_start_command


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register coordinator commands."""
    export = commands.add_parser(
        "export", help="merge a run's last global adapters into the base, as a plain HF checkpoint"
    )
    export.add_argument("--run", type=Path, required=True, help="run folder (runs/<run-id>)")
    export.add_argument("--out", type=Path, help="export directory (default: RUN/export)")
    export.add_argument(
        "--average-rounds",
        type=int,
        help="export the last stage trained as the mean of its last k rounds' global adapters "
        "(default: the run's export-average-rounds)",
    )
    export.set_defaults(handler=_export)
    add_plan_command(commands)
    add_warm_start_command(commands)


def _export(args: argparse.Namespace) -> int:
    from server.export import export_run
    from server.run_folder import RunFolder

    folder = RunFolder(args.run)
    if not (folder.root / "config.json").is_file():
        raise SystemExit(f"{folder.root} is not a run folder (no config.json)")
    if args.average_rounds is not None and args.average_rounds < 1:
        raise SystemExit(f"--average-rounds must be at least 1, got {args.average_rounds}")
    out = export_run(folder, args.out or folder.root / "export", args.average_rounds)
    print(f"exported run {folder.run_id} to {out}")
    return 0
