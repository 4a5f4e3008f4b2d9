"""Checkpoints: exact round trip, atomic writes, damaged files skipped, last complete round wins."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import server.checkpoints as checkpoints
from server.checkpoints import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from server.rules import FedAdam
from tests.server_fixtures import FINGERPRINT, random_arrays

SHAPES = {"z.lora_B": (6, 3), "a.lora_A": (3, 6), "merger.mlp.0.weight": (4, 4)}  # not sorted


def checkpoint(server_round: int, stage: str = "instruct", state=None) -> Checkpoint:
    arrays = dict(random_arrays(SHAPES, seed=server_round))
    return Checkpoint(stage, server_round, FINGERPRINT, "run-1", arrays, state or {})


def adam_round(adam: FedAdam, current, mean):
    """One FedAdam round whose only reply is ``mean``: the new global arrays."""
    adam.begin(current)
    adam.fold(mean, 1.0)
    return adam.result()


def assert_same(loaded: Checkpoint, saved: Checkpoint) -> None:
    assert (loaded.stage, loaded.server_round, loaded.fingerprint, loaded.run_id) == (
        saved.stage,
        saved.server_round,
        saved.fingerprint,
        saved.run_id,
    )
    assert list(loaded.arrays) == list(saved.arrays)
    for name, array in saved.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], array)
        assert loaded.arrays[name].dtype == array.dtype


def test_round_trip_keeps_order_values_and_strategy_state(tmp_path: Path) -> None:
    adam = FedAdam(server_lr=0.1)
    adam_round(adam, checkpoint(3).arrays, checkpoint(4).arrays)
    saved = checkpoint(3, state=adam.state_dict())
    path = save_checkpoint(tmp_path, saved)
    assert path == checkpoint_path(tmp_path, "instruct", 3)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    loaded = load_checkpoint(path, FINGERPRINT)
    assert_same(loaded, saved)
    assert set(loaded.strategy_state) == {f"{k}/{n}" for k in "mv" for n in SHAPES}
    for key, value in saved.strategy_state.items():
        np.testing.assert_array_equal(loaded.strategy_state[key], value)


def test_fedadam_resumed_from_a_checkpoint_continues_exactly(tmp_path: Path) -> None:
    means = [checkpoint(r).arrays for r in (10, 11, 12)]
    uninterrupted, expected = FedAdam(server_lr=0.05), checkpoint(1).arrays
    for mean in means:
        expected = adam_round(uninterrupted, expected, mean)

    interrupted, current = FedAdam(server_lr=0.05), checkpoint(1).arrays
    for mean in means[:2]:
        current = adam_round(interrupted, current, mean)
    state = interrupted.state_dict()
    save_checkpoint(tmp_path, Checkpoint("align", 2, FINGERPRINT, "run-1", current, state))
    resumed = latest_checkpoint(tmp_path, "align", FINGERPRINT)
    restarted = FedAdam(server_lr=0.05)
    restarted.load_state_dict(resumed.strategy_state)
    final = adam_round(restarted, resumed.arrays, means[2])
    for name in SHAPES:
        np.testing.assert_array_equal(final[name], expected[name])


def test_a_crash_while_writing_leaves_the_previous_checkpoint_in_charge(
    tmp_path: Path, monkeypatch
) -> None:
    save_checkpoint(tmp_path, checkpoint(1))
    written: list[Path] = []

    def torn_write(tensors, filename, metadata=None) -> None:
        written.append(Path(filename))
        save_file(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", torn_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, checkpoint(2))
    assert written and written[0] != checkpoint_path(tmp_path, "instruct", 2)
    assert not checkpoint_path(tmp_path, "instruct", 2).exists()
    assert_same(latest_checkpoint(tmp_path, "instruct", FINGERPRINT), checkpoint(1))


DAMAGES = {
    "truncated": lambda data: data[: len(data) - 100],
    "header cut": lambda data: data[:20],
    "empty": lambda data: b"",
    "garbage": lambda data: b"\x00\xff" * 64,
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_newest_checkpoint_is_skipped_and_logged(tmp_path: Path, caplog, damage) -> None:
    for server_round in (1, 2, 3):
        save_checkpoint(tmp_path, checkpoint(server_round))
    newest = checkpoint_path(tmp_path, "instruct", 3)
    newest.write_bytes(damage(newest.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="server.checkpoints"):
        found = latest_checkpoint(tmp_path, "instruct", FINGERPRINT)
    assert_same(found, checkpoint(2))
    assert f"skipping unreadable checkpoint {newest}" in caplog.text


def test_a_checkpoint_missing_an_array_of_its_own_list_is_not_trusted(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, checkpoint(1))
    path = save_checkpoint(tmp_path, checkpoint(2))
    complete = load_checkpoint(path)
    partial = {n: a for n, a in complete.arrays.items() if n != "a.lora_A"}
    metadata = {
        "format": checkpoints.FORMAT_VERSION,
        "stage": "instruct",
        "round": "2",
        "fingerprint": FINGERPRINT,
        "run_id": "run-1",
        "order": json.dumps(list(complete.arrays)),
    }
    save_file(partial, str(path), metadata=metadata)
    assert_same(latest_checkpoint(tmp_path, "instruct", FINGERPRINT), checkpoint(1))


def test_latest_is_the_highest_complete_round_of_that_stage(tmp_path: Path) -> None:
    for server_round in (2, 9, 10, 11):
        save_checkpoint(tmp_path, checkpoint(server_round))
    save_checkpoint(tmp_path, checkpoint(40, stage="align"))
    checkpoint_path(tmp_path, "instruct", 12).with_suffix(".safetensors.tmp").write_bytes(b"x")
    (tmp_path / "instruct-round-99.safetensors").write_bytes(b"not ours")  # wrong name pattern
    assert latest_checkpoint(tmp_path, "instruct", FINGERPRINT).server_round == 11
    assert latest_checkpoint(tmp_path, "align", FINGERPRINT).server_round == 40
    assert latest_checkpoint(tmp_path / "missing", "align") is None


def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, checkpoint(1))
    with pytest.raises(CheckpointError, match="fingerprint"):
        latest_checkpoint(tmp_path, "instruct", "another-model")
