"""Every benchmark script imports, and those with a ``parse_args`` accept their own defaults.

A benchmark is run by hand, long after the code it measures has moved: an option whose default
names a setting that no longer exists fails only when someone runs it.
"""

from __future__ import annotations

import argparse
import sys

import pytest

from tests.conftest import REPO_ROOT, load_benchmark

SCRIPTS = sorted(path.name for path in (REPO_ROOT / "benchmarks").glob("*.py"))


def test_the_benchmarks_folder_holds_scripts() -> None:
    assert "dp_learning.py" in SCRIPTS and len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_parses_its_defaults(script: str, monkeypatch) -> None:
    module = load_benchmark(script)
    assert callable(module.main), f"{script} has no main()"
    if not hasattr(module, "parse_args"):
        return
    monkeypatch.setattr(sys, "argv", [script])
    arguments = module.parse_args()
    assert isinstance(arguments, argparse.Namespace) and vars(arguments)
