"""The frozen stage-1 adapter travels once per site and run, keyed by its SHA-256.

The real ClientApp at two synthetic hospitals in Flower's simulation engine, driven by the real
strategy as the coordinator drives it (configure, stream with resend, aggregate): the first
``instruct`` round carries the adapter to both sites, which keep it in their work folders; the
next carries only its hash; a site whose copy was deleted and one whose copy was damaged
refuse with ``stage1-missing`` and get it again within the same round; a restarted server sends
it once more; arrays that do not match the announced hash are refused, kept nowhere, and never
resent in a loop.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from client.config import load_site_config
from client.stage1_store import Stage1Store
from protocol import Refusal, arrays_sha256, to_record
from server.coordinator import initial_arrays
from server.round_log import RoundLog
from server.rounds import stream_replies
from server.strategy import FedUmitStrategy, RoundFailed
from shared_model.spec import ModelSpec
from shared_model.tiny import SPEC_FILE
from simulations.runner import run_on_sites, write_site_config
from simulations.synthetic import generate_consortium

MISSING = Refusal.STAGE1_MISSING.value


def train_config(fingerprint: str, server_round: int) -> ConfigRecord:
    """A small DP ``instruct`` round as the coordinator configures it."""
    return ConfigRecord(
        {
            "stage": "instruct",
            "fingerprint": fingerprint,
            "run-id": "stage1-once",
            "lr": 1e-2,
            "local-steps": 1,
            "local-epochs": 0.0,
            "batch-size": 2,
            "dp": True,
            "noise-multiplier": 1.0,
            "max-grad-norm": 1.0,
            "physical-batch-size": 4,
            "rounds-left": 1,
            "server-round": server_round,
        }
    )


def perturbed(arrays: dict[str, np.ndarray], seed: int) -> OrderedDict[str, np.ndarray]:
    """``arrays`` plus small seeded noise (a trained adapter: its merge changes the base)."""
    rng = np.random.default_rng(seed)
    return OrderedDict(
        (name, (a + 0.01 * rng.standard_normal(a.shape)).astype(np.float32))
        for name, a in arrays.items()
    )


@pytest.fixture(scope="module")
def rounds(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> dict[str, Any]:
    """Run the phases once; keep each round's log and what the sites' stores held."""
    root = tmp_path_factory.mktemp("stage1-once")
    archives = generate_consortium(root / "archives", n_sites=2, patients=6, seed=5)
    configs = [
        write_site_config(
            root / "sites" / f"{a.name}.toml",
            name=a.name,
            archive=a,
            work_dir=root / "work" / a.name,
            model_spec=tiny_base / SPEC_FILE,
            max_epsilon=50.0,
        )
        for a in archives
    ]
    stores = {
        a.name: Stage1Store(load_site_config(c).work_dir / "stage1")
        for a, c in zip(archives, configs, strict=True)
    }
    spec = ModelSpec.from_toml(tiny_base / SPEC_FILE)
    fingerprint = spec.fingerprint()
    stage1 = perturbed(initial_arrays(spec, "align", 0, None), seed=1)
    stage1_hash = arrays_sha256(stage1)
    adapter = to_record(initial_arrays(spec, "instruct", 0, stage1))
    outcome: dict[str, Any] = {
        "names": [a.name for a in archives],
        "adapter_bytes": adapter.count_bytes(),
        "stage1_bytes": to_record(stage1).count_bytes(),
        "stage1_hash": stage1_hash,
    }
    first, second = (stores[a.name] for a in archives)
    server_app = ServerApp()

    def train(strategy: FedUmitStrategy, grid: Grid, server_round: int) -> RoundLog[str]:
        messages = strategy.configure_train(
            server_round, adapter, train_config(fingerprint, server_round), grid
        )
        replies = stream_replies(grid, messages, 300, resend=strategy.resend_stage1)
        try:
            return strategy.aggregate_train(server_round, replies).log
        except RoundFailed as failed:
            return failed.log

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedUmitStrategy(min_sites=2)
        strategy.set_stage1(stage1, stage1_hash)
        outcome["first"] = train(strategy, grid, 1)
        outcome["kept"] = [store.path(stage1_hash).is_file() for store in (first, second)]
        outcome["cached"] = train(strategy, grid, 2)
        first.path(stage1_hash).unlink()  # a cleared cache
        second.path(stage1_hash).write_bytes(b"not the adapter")  # a damaged copy
        outcome["lost"] = train(strategy, grid, 3)
        outcome["restored"] = [store.get(stage1_hash) is not None for store in (first, second)]
        restarted = FedUmitStrategy(min_sites=2)  # a new server process knows no site's copy
        restarted.set_stage1(stage1, stage1_hash)
        outcome["restarted"] = train(restarted, grid, 4)
        forged = FedUmitStrategy(min_sites=2)  # arrays that do not match the announced hash
        forged_arrays = perturbed(stage1, seed=2)
        forged.set_stage1(forged_arrays, stage1_hash)
        outcome["forged_hash"] = arrays_sha256(forged_arrays)
        outcome["forged"] = train(forged, grid, 5)

    run_on_sites(server_app, configs)
    outcome["forged_kept"] = [
        store.path(outcome["forged_hash"]).exists() for store in (first, second)
    ]
    outcome["genuine_kept"] = [store.get(stage1_hash) is not None for store in (first, second)]
    return outcome


def test_the_first_instruct_round_carries_the_adapter_and_sites_keep_it(rounds) -> None:
    with_stage1 = rounds["adapter_bytes"] + rounds["stage1_bytes"]
    log = rounds["first"]
    assert sorted(log.sites) == sorted(rounds["names"]) and not log.refused
    assert log.sent == {name: with_stage1 for name in rounds["names"]}
    assert rounds["kept"] == [True, True]


def test_later_rounds_announce_the_hash_only(rounds) -> None:
    log = rounds["cached"]
    assert sorted(log.sites) == sorted(rounds["names"]) and not log.refused
    assert log.sent == {name: rounds["adapter_bytes"] for name in rounds["names"]}


def test_a_site_that_lost_its_copy_gets_it_again_in_the_same_round(rounds) -> None:
    log = rounds["lost"]
    assert sorted(log.sites) == sorted(rounds["names"]) and not log.refused
    resent = 2 * rounds["adapter_bytes"] + rounds["stage1_bytes"]  # refused, then resent
    assert log.sent == {name: resent for name in rounds["names"]}
    assert rounds["restored"] == [True, True]


def test_a_restarted_server_sends_the_adapter_once_more(rounds) -> None:
    log = rounds["restarted"]
    assert sorted(log.sites) == sorted(rounds["names"]) and not log.refused
    with_stage1 = rounds["adapter_bytes"] + rounds["stage1_bytes"]
    assert log.sent == {name: with_stage1 for name in rounds["names"]}


def test_arrays_not_matching_the_announced_hash_are_refused_once_and_kept_nowhere(
    rounds,
) -> None:
    log = rounds["forged"]
    assert not log.sites and log.refused == {name: MISSING for name in rounds["names"]}
    with_stage1 = rounds["adapter_bytes"] + rounds["stage1_bytes"]
    assert log.sent == {name: with_stage1 for name in rounds["names"]}  # no resend loop
    assert rounds["forged_kept"] == [False, False]
    assert rounds["genuine_kept"] == [True, True]


def test_the_store_refuses_names_that_are_not_hashes(tmp_path: Path) -> None:
    store = Stage1Store(tmp_path)
    with pytest.raises(ValueError, match="SHA-256"):
        store.path("../../ledger")
    arrays = OrderedDict([("b", np.ones(3, np.float32)), ("a", np.zeros(2, np.float32))])
    with pytest.raises(ValueError, match="do not hash"):
        store.put(arrays, "0" * 64)
    store.put(arrays, arrays_sha256(arrays))
    kept = store.get(arrays_sha256(arrays))
    assert kept is not None and list(kept) == ["b", "a"]  # order is part of the hash
