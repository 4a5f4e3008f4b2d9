"""Tiny simulated consortia for end-to-end tests: synthetic hospitals and their site configs."""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from deploy.flower import toml_literal
from simulations.runner import write_site_config
from simulations.synthetic import generate_consortium

# The smallest schedule that still runs both stages under DP with a fixed sigma.
TINY_SCHEDULE: dict[str, Any] = {
    "seed": 0,
    "dp": True,
    "noise-multiplier": 1.0,
    "eval-every": 0,
    "eval-at-start": False,
    "align.local-steps": 2,
    "instruct.local-steps": 2,
    "align.batch-size": 2,
    "instruct.batch-size": 2,
    "physical-batch-size": 4,
    "round-timeout": 600.0,
}

# One short-answer task per stage keeps training and evaluation (generation) quick.
TINY_TASKS = ("caption", "classification")


def tiny_sites(
    root: Path,
    spec_file: Path,
    tasks: Sequence[str] = TINY_TASKS,
    sites: int = 2,
    policy: Mapping[str, Any] | None = None,
) -> list[Path]:
    """``sites`` synthetic hospitals under ``root`` and their site configs (work folders in
    ``root``), with ``policy`` keys set beside ``tasks``.

    The budget is generous: the schedule's fixed sigma, not the budget, sets the noise.
    """
    archives = generate_consortium(root / "archives", n_sites=sites, patients=6, seed=3)
    configs = []
    for archive in archives:
        path = write_site_config(
            root / "sites" / f"{archive.name}.toml",
            name=archive.name,
            archive=archive,
            work_dir=root / "work" / archive.name,
            model_spec=spec_file,
            max_epsilon=1e4,
            replayable_noise_seed=0,  # simulated sites opt in: runs (and resumes) repeat
            send_train_loss=True,
        )
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        data["policy"].update(tasks=list(tasks), **(policy or {}))
        path.write_text(tomli_w.dumps(data), encoding="utf-8")
        configs.append(path)
    return configs


def simulate_argv(sites: Sequence[Path], overrides: Mapping[str, Any]) -> list[str]:
    """argv of a Python process that runs :func:`simulations.runner.simulate` on ``sites``."""
    code = (
        "import json, sys\n"
        "from simulations.runner import simulate\n"
        "simulate(json.loads(sys.argv[1]), json.loads(sys.argv[2]))\n"
    )
    return [sys.executable, "-c", code, json.dumps([str(s) for s in sites]), json.dumps(overrides)]


def run_config_text(overrides: Mapping[str, Any]) -> str:
    """``overrides`` as ``flwr run --run-config`` text: space-separated TOML ``key=value``."""
    return " ".join(
        f"{key}={toml_literal(v) if isinstance(v, str) else json.dumps(v)}"
        for key, v in overrides.items()
    )
