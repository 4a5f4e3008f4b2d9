"""Kill the coordinator mid-run, resume, and get the same final adapters as an uninterrupted run.

Both runs are the same simulated consortium (two tiny synthetic hospitals, ``align`` 2 rounds,
``instruct`` 2 rounds, 2 local DP steps) in their own processes and site work folders. The
interrupted one is SIGKILLed, with its Ray workers, as soon as the checkpoint of ``instruct``
round 1 appears, then started again with ``resume=<run folder>``: it must redo neither ``align``
nor instruct round 1, and end bitwise where the uninterrupted run ends.

The noise multiplier is fixed (``noise-multiplier = 1.0``). With ``0`` each site calibrates
sigma to the budget left in its privacy ledger, and a killed round has already charged the
ledger (the ledger is never reset), so a resumed run would add different noise: the same
privacy guarantee, not the same arrays.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client.config import load_site_config
from client.privacy import PrivacyLedger
from server.checkpoints import Checkpoint, checkpoint_path, load_checkpoint, save_checkpoint
from server.config import RUN_DEFAULTS, RunConfig
from server.coordinator import Coordinator
from server.run_folder import RunFolder
from shared_model.spec import ModelSpec
from tests.deploy_fixtures import running, wait_for
from tests.simulation_fixtures import TINY_SCHEDULE, simulate_argv, tiny_sites

pytestmark = pytest.mark.slow

ROUNDS = {"align": 2, "instruct": 2}
KILL_AT = ("instruct", 1)
RUN_TIMEOUT = 300.0


def align_ledger_entries(sites: list[Path]) -> int:
    """How many ``align`` rounds the sites' privacy ledgers have charged."""
    entries = [PrivacyLedger(load_site_config(s).ledger_path).entries() for s in sites]
    return sum(entry.stage == "align" for site in entries for entry in site)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Iterator[dict[str, Any]]:
    """An uninterrupted run and, beside it, a run killed after instruct round 1 and resumed."""
    from shared_model.tiny import SPEC_FILE

    root = tmp_path_factory.mktemp("resume")
    schedule = {
        **TINY_SCHEDULE,
        "model-spec": str(tiny_base / SPEC_FILE),
        "run-dir": str(root / "runs"),
        **{f"{stage}.rounds": rounds for stage, rounds in ROUNDS.items()},
    }
    full_sites = tiny_sites(root / "full", tiny_base / SPEC_FILE)
    killed_sites = tiny_sites(root / "killed", tiny_base / SPEC_FILE)
    folder = RunFolder(root / "runs" / "killed")
    with running(root) as processes:
        full = processes.start("full", simulate_argv(full_sites, {**schedule, "run-id": "full"}))
        killed = processes.start(
            "killed", simulate_argv(killed_sites, {**schedule, "run-id": "killed"})
        )
        wait_for(
            lambda: (
                checkpoint_path(folder.checkpoints, *KILL_AT).is_file() or killed.poll() is not None
            ),
            RUN_TIMEOUT,
            "the checkpoint to kill at",
            interval=0.05,
        )
        assert killed.poll() is None, processes.log("killed")
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        before = {
            "checkpoints": sorted(p.name for p in folder.checkpoints.iterdir()),
            "align-files": {p.name: p.stat() for p in folder.checkpoints.glob("align-*")},
            "align-entries": align_ledger_entries(killed_sites),
        }
        resumed = processes.start(
            "resumed", simulate_argv(killed_sites, {**schedule, "resume": str(folder.root)})
        )
        for name, process in (("full", full), ("resumed", resumed)):
            process.wait(timeout=RUN_TIMEOUT)
            assert process.returncode == 0, processes.log(name)
    yield {
        "full": RunFolder(root / "runs" / "full"),
        "resumed": folder,
        "before": before,
        "align-entries": align_ledger_entries(killed_sites),
    }


def test_resumed_run_ends_bitwise_where_the_uninterrupted_run_ends(runs: dict[str, Any]) -> None:
    for stage, rounds in ROUNDS.items():
        full = load_checkpoint(checkpoint_path(runs["full"].checkpoints, stage, rounds))
        resumed = load_checkpoint(checkpoint_path(runs["resumed"].checkpoints, stage, rounds))
        assert list(resumed.arrays) == list(full.arrays)
        for name, array in full.arrays.items():
            assert np.array_equal(resumed.arrays[name], array), f"{stage} {name} differs"
    assert (runs["resumed"].root / "export").is_dir()


def test_metrics_hold_one_record_per_stage_and_round(runs: dict[str, Any]) -> None:
    expected = [(s, r) for s, rounds in ROUNDS.items() for r in range(rounds + 1)]
    for folder in (runs["full"], runs["resumed"]):
        assert [(m["stage"], m["round"]) for m in folder.metrics()] == expected


def test_a_run_killed_in_instruct_resumes_without_rerunning_align(runs: dict[str, Any]) -> None:
    before, folder = runs["before"], runs["resumed"]
    stage, server_round = KILL_AT
    assert checkpoint_path(folder.checkpoints, stage, server_round).name in before["checkpoints"]
    assert (
        checkpoint_path(folder.checkpoints, stage, ROUNDS[stage]).name not in before["checkpoints"]
    ), "killed too late"
    for name, stat in before["align-files"].items():
        after = (folder.checkpoints / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert runs["align-entries"] == before["align-entries"] == 2 * ROUNDS["align"]


def test_records_after_the_last_checkpoint_are_dropped_before_resuming(
    tmp_path: Path, tiny_spec: ModelSpec
) -> None:
    """Killed after instruct round 1 was recorded but before it was checkpointed: the resumed
    run redoes instruct from round 0, so the records of instruct go."""
    folder = RunFolder(tmp_path / "run").create({})
    arrays = {"w": np.zeros(2, np.float32)}
    for server_round in (1, 2):
        checkpoint = Checkpoint("align", server_round, tiny_spec.fingerprint(), "run", arrays, {})
        save_checkpoint(folder.checkpoints, checkpoint)
    records = [("align", r) for r in range(3)] + [("instruct", r) for r in range(2)]
    for stage, server_round in records:
        folder.append_metrics({"stage": stage, "round": server_round})
    rounds = {f"{stage}.rounds": rounds for stage, rounds in ROUNDS.items()}
    config = RunConfig.from_flat({**RUN_DEFAULTS, **rounds})
    Coordinator(config, tiny_spec, folder)._forget_unfinished_rounds()
    assert [(m["stage"], m["round"]) for m in folder.metrics()] == records[:3]
