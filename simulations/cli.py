"""Simulation commands (filled by the simulation issue)."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register simulation commands."""
