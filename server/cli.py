"""Coordinator commands (filled by the coordinator issue)."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register coordinator commands."""
