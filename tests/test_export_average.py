"""Tail averaging at export: the last stage trained is merged as the mean of its last rounds'
global adapters, earlier stages as their last round's, and the card names the rounds."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedumit.cli import main
from server.checkpoints import Checkpoint, save_checkpoint
from server.export import export_run
from server.run_folder import RunFolder
from shared_model.export import export_merged
from shared_model.loading import stage_model
from shared_model.spec import ModelSpec


def perturbed(arrays: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """``arrays`` moved by seeded noise, as a round of training would move them."""
    rng = np.random.default_rng(seed)
    return {n: (a + rng.normal(0, 0.05, a.shape)).astype(np.float32) for n, a in arrays.items()}


@pytest.fixture(scope="module")
def run(tiny_spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """A run folder with two ``align`` and three ``instruct`` rounds' global adapters; its
    config asks for the mean of the last two ``instruct`` rounds."""
    root = tmp_path_factory.mktemp("runs")
    fingerprint = tiny_spec.fingerprint()
    folder = RunFolder(root / "run-avg").create(
        {
            "run": {"aggregation": "fedavg", "dp": True, "export_average_rounds": 2},
            "model": tiny_spec.to_dict(),
            "fingerprint": fingerprint,
        }
    )
    align, _ = stage_model(tiny_spec, "align")
    instruct, _ = stage_model(tiny_spec, "instruct")
    for stage, adapter, rounds in (("align", align, 2), ("instruct", instruct, 3)):
        for server_round in range(1, rounds + 1):
            arrays = perturbed(adapter.arrays(), seed=10 * server_round + len(stage))
            checkpoint = Checkpoint(stage, server_round, fingerprint, folder.run_id, arrays, {})
            save_checkpoint(folder.checkpoints, checkpoint)
    return folder


def stage_arrays(folder: RunFolder, stage: str, server_round: int) -> dict[str, np.ndarray]:
    path = folder.checkpoints / f"{stage}-round-{server_round:04d}.safetensors"
    return {k: v for k, v in load_file(str(path)).items() if not k.startswith("optimizer/")}


def weights(export: Path) -> dict[str, np.ndarray]:
    """Every tensor of an exported checkpoint."""
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(export.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    return tensors


def by_hand(spec: ModelSpec, out: Path, align: dict, instruct: dict) -> dict[str, np.ndarray]:
    return weights(export_merged(spec, out, align_arrays=align, instruct_arrays=instruct))


def test_the_run_configs_rounds_are_averaged_and_named_in_the_card(
    run: RunFolder, tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    exported = export_run(run, tmp_path / "export")
    two, three = stage_arrays(run, "instruct", 2), stage_arrays(run, "instruct", 3)
    mean = {name: (two[name].astype(np.float64) + three[name]) / 2 for name in two}
    expected = by_hand(
        tiny_spec,
        tmp_path / "by-hand",
        align=stage_arrays(run, "align", 2),  # align is not averaged: instruct trained on round 2
        instruct={name: value.astype(np.float32) for name, value in mean.items()},
    )
    last_only = by_hand(
        tiny_spec, tmp_path / "last", align=stage_arrays(run, "align", 2), instruct=three
    )
    got = weights(exported)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert any(not np.array_equal(got[n], last_only[n]) for n in got)  # the mean is not round 3
    card = (exported / "README.md").read_text(encoding="utf-8")
    assert "exported adapters: align round 2; instruct the mean of rounds 2, 3 (the" in card


def test_the_command_line_overrides_the_run_and_a_longer_tail_takes_every_round(
    run: RunFolder, tmp_path: Path
) -> None:
    printed = io.StringIO()
    out = tmp_path / "every-round"
    with contextlib.redirect_stdout(printed):
        argv = ["export", "--run", str(run.root), "--out", str(out), "--average-rounds", "9"]
        assert main(argv) == 0
    assert str(out) in printed.getvalue()
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "instruct the mean of rounds 1, 2, 3" in card
    with pytest.raises(SystemExit, match="--average-rounds must be at least 1"):
        main(["export", "--run", str(run.root), "--out", str(out), "--average-rounds", "0"])
    with pytest.raises(ValueError, match="at least 1"):
        export_run(run, out, average_rounds=0)
    assert (out / "README.md").read_text(encoding="utf-8") == card  # the export was kept


def test_a_run_that_stopped_after_align_averages_align(
    run: RunFolder, tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    align_only = RunFolder(tmp_path / "align-only").create(run.config())
    for server_round in (1, 2):
        source = run.checkpoints / f"align-round-{server_round:04d}.safetensors"
        (align_only.checkpoints / source.name).write_bytes(source.read_bytes())
    exported = export_run(align_only, tmp_path / "export")
    assert "align the mean of rounds 1, 2" in (exported / "README.md").read_text(encoding="utf-8")
