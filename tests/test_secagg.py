"""Secure aggregation (``aggregation = "secagg"``) in Flower's simulation engine, on three tiny
synthetic hospitals running the real ClientApp: DP-SGD, ledger, audit log, Flower's SecAgg+.

One simulation runs five consortium runs of one ``align`` round each, on the same sites:
plain FedAvg, secure aggregation, secure aggregation with one site dropping after sharing its
keys, with two dropping, and with one site refusing the training step. Sites opt in to
replayable sampling and noise, so a site's update in one run is its update in every run; their
policy rounds counts to 1000, so FedAvg weighs the three equally, as secure aggregation does;
they answer no evaluation (none is tested here).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from client.app import build_client_app
from client.audit import SECURE_AGGREGATION, AuditLog
from client.config import load_site_config
from client.site import site_for
from protocol import CONFIG, META, from_record
from server.checkpoints import latest_checkpoint
from server.config import RUN_DEFAULTS, RunConfig
from server.coordinator import Coordinator, initial_arrays
from server.counting_grid import CountingGrid
from server.rules import AggregationRule
from server.run_folder import RunFolder
from server.secagg import quantization_step
from shared_model.spec import ModelSpec
from shared_model.tiny import SPEC_FILE
from tests.simulation_fixtures import TINY_SCHEDULE, tiny_sites

BOUND = RUN_DEFAULTS["max-update-norm"]
# The most SecAgg+ moves a coordinate of the mean: one quantisation level (stochastic rounding
# moves each site's coordinate by less than one), plus float32 rounding of the sum.
TOLERANCE = quantization_step(BOUND) + 1e-6
DROPS = {"secagg-drop-one": {2}, "secagg-drop-two": {1, 2}}  # run id -> partitions that drop
REFUSES = {"secagg-refuse-one": {0}}  # run id -> partitions sent a message they must refuse
RUNS = {
    "fedavg": "fedavg",
    "secagg": "secagg",
    "secagg-drop-one": "secagg",
    "secagg-drop-two": "secagg",
    "secagg-refuse-one": "secagg",
}


class ReplySpy(CountingGrid):
    """The server's Grid, keeping a copy of every array and masked vector a reply carried (the
    strategy releases reply arrays once read)."""

    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self.arrays: list[tuple[str, OrderedDict[str, np.ndarray]]] = []  # (site, arrays)
        self.masked: list[list[np.ndarray]] = []

    def _count_received(self, replies: list[Message]) -> None:
        super()._count_received(replies)
        for reply in replies:
            if reply.has_error():
                continue
            site = str(reply.content[META]["site"]) if META in reply.content else ""
            for record in reply.content.array_records.values():
                if len(record):  # SecAgg+ empties the legacy record it masked
                    self.arrays.append((site, from_record(record)))
            secagg = reply.content.config_records.get(RECORD_KEY_CONFIGS, {})
            if Key.MASKED_PARAMETERS in secagg:
                self.masked.append([bytes_to_ndarray(b) for b in secagg[Key.MASKED_PARAMETERS]])


def three_sites(root: Path, spec_file: Path) -> list[Path]:
    return tiny_sites(
        root,
        spec_file,
        tasks=("caption",),
        sites=3,
        policy={"count_rounding": 1000, "max_evaluations_per_run": 0},
    )


def dropping_client_app(configs: list[Path]) -> ClientApp:
    """The real ClientApp; in the runs of :data:`DROPS` the listed sites go offline when the
    training step arrives, after they set up and shared their keys; in those of
    :data:`REFUSES` the listed sites get a training step for another model, which they refuse."""
    paths = [str(p.resolve()) for p in configs]
    inner = build_client_app(lambda context: site_for(paths[partition(context)]))
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        if CONFIG in message.content:
            run_id = str(message.content[CONFIG].get("run-id", ""))
            if partition(context) in DROPS.get(run_id, ()):
                raise ConnectionError("the site went offline")
            if partition(context) in REFUSES.get(run_id, ()):
                message.content[CONFIG]["fingerprint"] = "0" * 16
        return inner(message, context)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        return inner(message, context)

    return app


def record_folds(rule: AggregationRule) -> list[tuple[Any, float]]:
    """What the rule receives from the strategy, fold by fold."""
    folds: list[tuple[Any, float]] = []
    fold = rule.fold

    def recording(arrays, weight: float) -> None:
        folds.append((arrays, weight))
        fold(arrays, weight)

    rule.fold = recording
    return folds


def partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("secagg")
    configs = three_sites(root, tiny_base / SPEC_FILE)
    spec = ModelSpec.from_toml(tiny_base / SPEC_FILE)
    result: dict[str, Any] = {"configs": configs, "spec": spec}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        for run_id, aggregation in RUNS.items():
            settings = {**TINY_SCHEDULE, "aggregation": aggregation, "run-id": run_id}
            config = RunConfig.from_flat(
                {**RUN_DEFAULTS, **settings, "align.rounds": 1, "stop-after-align": True,
                 "retries": 0, "min-available-sites": 3}
            )  # fmt: skip
            folder = RunFolder(root / "runs" / run_id).create({})
            spy = ReplySpy(grid)
            coordinator = Coordinator(config, spec, folder)
            folds = record_folds(coordinator.strategy.rule)
            result[run_id] = {
                "outcome": coordinator.run(spy),
                "folder": folder,
                "spy": spy,
                "folds": folds,
            }

    run_simulation(
        server_app=server_app,
        client_app=dropping_client_app(configs),
        num_supernodes=3,
        backend_config={
            "client_resources": {"num_cpus": 2, "num_gpus": 0.0},
            "init_args": {"logging_level": logging.WARNING},
        },
    )
    result["initial"] = initial_arrays(spec, "align", 0, None)
    return result


def site_updates(runs: dict[str, Any]) -> dict[str, OrderedDict[str, np.ndarray]]:
    """Each site's own update (under plain FedAvg the server sees it), by site name."""
    initial = runs["initial"]
    return {
        site: OrderedDict((n, arrays[n] - initial[n]) for n in initial)
        for site, arrays in runs["fedavg"]["spy"].arrays
    }


def global_arrays(runs: dict[str, Any], run_id: str) -> OrderedDict[str, np.ndarray]:
    return runs[run_id]["outcome"].arrays["align"]


def assert_close(a, b, atol: float) -> None:
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=atol, err_msg=name)


def test_secure_aggregation_gives_fedavgs_adapter_within_one_quantisation_step(runs) -> None:
    fedavg, secure = global_arrays(runs, "fedavg"), global_arrays(runs, "secagg")
    assert_close(secure, fedavg, TOLERANCE)
    moved = max(float(np.max(np.abs(fedavg[n] - runs["initial"][n]))) for n in fedavg)
    assert moved > 100 * TOLERANCE, "training moved the adapter by less than the tolerance"
    records = runs["secagg"]["folder"].metrics()
    assert len(records[-1]["sites"]) == 3 and records[-1]["epsilon"]
    checkpoint = latest_checkpoint(
        runs["secagg"]["folder"].checkpoints, "align", runs["spec"].fingerprint()
    )
    assert checkpoint.server_round == 1
    assert_close(checkpoint.arrays, secure, 0.0)


def test_the_server_never_holds_one_sites_update(runs) -> None:
    updates = site_updates(runs)
    assert len(updates) == 3
    spy = runs["secagg"]["spy"]
    assert not spy.arrays, "a reply carried arrays in clear"
    assert len(spy.masked) == 3
    for masked in spy.masked:  # dequantised, a masked vector is noise, not an update
        vector = np.concatenate([m.ravel() for m in masked[1:]]).astype(np.float64)
        dequantised = vector * quantization_step(BOUND) - BOUND
        for update in updates.values():
            flat = np.concatenate([u.ravel() for u in update.values()])
            assert np.max(np.abs(dequantised - flat)) > BOUND / 2
    (mean, weight), *more = runs["secagg"]["folds"]
    assert not more and weight == 3.0  # the strategy received one thing: the sum of three
    expected = {n: np.mean([u[n] for u in updates.values()], axis=0) for n in runs["initial"]}
    assert_close(mean, expected, TOLERANCE)
    for update in updates.values():  # ... and it is no site's own update
        assert max(float(np.max(np.abs(mean[n] - update[n]))) for n in update) > TOLERANCE


def test_each_site_clips_and_records_what_it_masked(runs) -> None:
    for config in runs["configs"]:
        records = AuditLog(load_site_config(config).work_dir / "audit.jsonl").records()
        steps = [r for r in records if r.get("event") == SECURE_AGGREGATION]
        masked = [r for r in steps if "masked_sha256" in r]
        assert {r["step"] for r in steps} >= {"setup", "share_keys", "collect_masked_vectors"}
        assert masked and all(r["max_update_norm"] == BOUND for r in masked)
        assert all(r["not_sent"] == ["arrays", "num-examples"] for r in masked)
        assert all(r["update_rms"] * r["scale"] <= BOUND + 1e-12 for r in masked)
        assert all(r["coordinates_beyond_range"] == 0 for r in masked)


def test_a_site_dropping_after_sharing_its_keys_is_survived(runs) -> None:
    run = runs["secagg-drop-one"]
    assert run["outcome"].completed
    record = run["folder"].metrics()[-1]
    assert len(record["sites"]) == 2
    (dropped, why), *others = record["rejected"].items()
    assert not others and why == "dropped out of secure aggregation (error code 2)"
    assert dropped not in record["sites"]
    updates, initial = site_updates(runs), runs["initial"]
    remaining = [updates[site] for site in record["sites"]]
    expected = {n: initial[n] + np.mean([u[n] for u in remaining], axis=0) for n in initial}
    assert_close(global_arrays(runs, "secagg-drop-one"), expected, TOLERANCE)


def test_too_few_sites_left_to_unmask_fails_the_round_and_keeps_no_checkpoint(runs) -> None:
    run = runs["secagg-drop-two"]
    outcome = run["outcome"]
    assert not outcome.completed
    assert "secure aggregation stopped: 1 of 3 sites remain" in outcome.stopped_reason
    assert "unmasking needs 2" in outcome.stopped_reason
    assert run["folder"].metrics()[-1]["failed"] == outcome.stopped_reason
    assert latest_checkpoint(run["folder"].checkpoints, "align", runs["spec"].fingerprint()) is None


def test_a_site_refusing_the_round_drops_out_and_its_code_reaches_the_record(runs) -> None:
    record = runs["secagg-refuse-one"]["folder"].metrics()[-1]
    assert runs["secagg-refuse-one"]["outcome"].completed and len(record["sites"]) == 2
    assert list(record["refused"].values()) == ["fingerprint-mismatch"]
    assert not record["rejected"]
