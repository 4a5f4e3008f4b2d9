"""The ``fedumit`` command.

Each package contributes its commands through a module with ``add_commands(subparsers)``;
handlers import their heavy dependencies lazily so ``fedumit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "shared_model.cli",
    "client.cli",
    "server.cli",
    "simulations.cli",
    "deploy.cli",
    "fedumit.infer_cli",
)

OWN_PACKAGES = ("client", "server", "shared_model", "simulations", "deploy", "fedumit", "protocol")


def build_parser() -> argparse.ArgumentParser:
    """Parser with every package's commands registered."""
    parser = argparse.ArgumentParser(
        prog="fedumit",
        description="Federated training of a unified medical vision-language model (UMIT).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``fedumit`` command and return its exit code."""
    args = build_parser().parse_args(argv)
    from shared_model.device import configure_cpu_threads

    configure_cpu_threads()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # FedUMIT's own progress at INFO; libraries only when they warn
        for package in OWN_PACKAGES:
            logging.getLogger(package).setLevel(logging.INFO)
        # Flower prints its INFO and above through its own console handler; passed on to ours
        # as well, each of its warnings would print twice and its DEBUG lines once
        logging.getLogger("flwr").propagate = False
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
