"""Commands for hospital IT: ``fedumit site check``, ``privacy``, ``audit`` and ``approve``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register the ``site`` command group."""
    site = commands.add_parser("site", help="inspect a hospital site (archive, privacy budget)")
    site_commands = site.add_subparsers(dest="site_command", required=True, metavar="SUBCOMMAND")

    check = site_commands.add_parser(
        "check", help="read the archive and report what training would use and every problem"
    )
    check.add_argument("--site", type=Path, required=True, help="site config TOML")
    check.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    check.set_defaults(handler=_check)

    privacy = site_commands.add_parser(
        "privacy", help="print the privacy ledger: epsilon spent per run, budget left"
    )
    privacy.add_argument("--site", type=Path, required=True, help="site config TOML")
    privacy.add_argument("--json", action="store_true", help="print JSON instead of a table")
    privacy.add_argument(
        "--init",
        action="store_true",
        help="create the site's ledger and audit log (once, before the site first trains)",
    )
    privacy.add_argument(
        "--repair", action="store_true", help="drop a torn last line (never trained), then report"
    )
    privacy.set_defaults(handler=_privacy)

    audit = site_commands.add_parser(
        "audit", help="every message the site received and every reply it sent; verify the log"
    )
    audit.add_argument("--site", type=Path, required=True, help="site config TOML")
    audit.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    audit.set_defaults(handler=_audit)

    approve = site_commands.add_parser(
        "approve", help="approve an app bundle (FAB) for this site's SuperNode to run"
    )
    approve.add_argument("--site", type=Path, required=True, help="site config TOML")
    approve.add_argument(
        "bundle",
        help="a .fab file (flwr build), or the Flower run id of a bundle the site refused",
    )
    approve.set_defaults(handler=_approve)


def _check(args: argparse.Namespace) -> int:
    from client.archive.check import run_site_check

    return run_site_check(args.site, json_path=args.json)


def _privacy(args: argparse.Namespace) -> int:
    from client.privacy.report import run_privacy_report

    return run_privacy_report(args.site, as_json=args.json, repair=args.repair, init=args.init)


def _audit(args: argparse.Namespace) -> int:
    from client.audit_report import run_audit_report

    return run_audit_report(args.site, as_json=args.json)


def _approve(args: argparse.Namespace) -> int:
    from client.approve import run_approve

    return run_approve(args.site, args.bundle)
