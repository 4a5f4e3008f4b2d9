"""Run a consortium in Flower's simulation engine: the very ServerApp and ClientApp logic a
deployment runs, one virtual node per site config."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from client.app import build_client_app
from client.config import load_site_config
from client.records import initialize_site_records
from client.site import site_for
from server.app import run
from server.config import RUN_DEFAULTS, RunConfig
from server.run_folder import RunFolder

log = logging.getLogger(__name__)


def write_site_config(
    path: Path,
    *,
    name: str,
    archive: Path,
    work_dir: Path,
    model_spec: Path,
    max_epsilon: float = 8.0,
    delta: float = 1e-5,
    privacy_unit: str = "patient",
    require_dp: bool = True,
    replayable_noise_seed: int | None = None,
    send_train_loss: bool = False,
    subspace: Mapping[str, Any] | None = None,
    contrast: Mapping[str, Any] | None = None,
    balance_answers: bool = False,
    tasks: Sequence[str] | None = None,
    max_eval_records: int = 0,
) -> Path:
    """A site config TOML for a virtual hospital (generous local caps: simulations vary them),
    with its privacy ledger and audit log created.

    ``replayable_noise_seed`` opts the site in to sampling and noise keyed by that seed, so a
    simulation can be repeated; a site in a deployment never sets it. ``send_train_loss`` lets
    the site report its training loss (the run's loss curve), which deployments leave off.
    ``subspace`` and ``contrast`` are the config's ``[subspace]`` and ``[contrast]`` tables, if
    any (:class:`client.config.SubspaceConfig`, :class:`client.config.ContrastConfig`);
    ``balance_answers``, ``tasks`` (default: every task) and ``max_eval_records`` (default:
    every record) are the policy's.
    """
    data: dict[str, Any] = {
        "site": {
            "name": name,
            "archive": str(archive),
            "work_dir": str(work_dir),
            "device": "auto",
        },
        "model": {"spec": str(model_spec)},
        "policy": {
            "privacy_unit": privacy_unit,
            "max_epsilon": max_epsilon,
            "delta": delta,
            "max_local_epochs": 1000.0,
            "max_batch_size": 1024,
            "max_learning_rate": 1.0,
            "require_dp": require_dp,
            "send_train_loss": send_train_loss,
            "balance_answers": balance_answers,
            "max_eval_records": max_eval_records,
        },
    }
    if replayable_noise_seed is not None:
        data["policy"]["replayable_noise_seed"] = replayable_noise_seed
    if tasks is not None:
        data["policy"]["tasks"] = list(tasks)
    for section, table in (("subspace", subspace), ("contrast", contrast)):
        if table is not None:
            data[section] = dict(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    initialize_site_records(load_site_config(path))
    return path


def simulate(site_configs: Sequence[Path], overrides: Mapping[str, Any]) -> RunFolder:
    """Run every stage over the sites in Flower's simulation engine; return the run folder."""
    config = RunConfig.from_flat({**RUN_DEFAULTS, **overrides})
    outcome: dict[str, RunFolder] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        outcome["folder"] = run(grid, config)

    run_on_sites(server_app, site_configs)
    if "folder" not in outcome:
        raise RuntimeError("the simulated run did not finish; see the log above")
    return outcome["folder"]


def run_on_sites(server_app: ServerApp, site_configs: Sequence[Path]) -> None:
    """Run ``server_app`` in Flower's simulation engine with the real ClientApp, one virtual
    node per site config (node ``partition-id`` i is site ``i``)."""
    paths = [str(Path(p).resolve()) for p in site_configs]

    def site_of(context: Context):
        return site_for(paths[int(context.node_config["partition-id"])])

    # Ray's coming default, which also stops its FutureWarning: an actor given no GPU keeps
    # the visible-devices variable as it is (on a machine with a GPU each site is given one)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    flower_log = logging.getLogger("flwr")
    flower_log.addFilter(_without_simulation_deprecation)
    try:
        run_simulation(
            server_app=server_app,
            client_app=build_client_app(site_of),
            num_supernodes=len(paths),
            backend_config={
                "client_resources": {"num_cpus": 2, "num_gpus": _gpus_per_site()},
                "init_args": {"logging_level": logging.WARNING},
            },
        )
    finally:
        flower_log.removeFilter(_without_simulation_deprecation)


def _without_simulation_deprecation(record: logging.LogRecord) -> bool:
    """Drop Flower 1.42's notice that ``run_simulation`` is deprecated in favour of ``flwr run``:
    it is addressed to FedUMIT's developers, not to someone running ``fedumit simulate``."""
    return "`run_simulation` function is deprecated" not in record.getMessage()


def _gpus_per_site() -> float:
    """One GPU per virtual site at a time when there is one (sites then run one after another)."""
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0
