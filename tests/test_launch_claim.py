"""One ServerApp per ``fedumit launch``: a second start of the same launch (Flower's CLI retries
a ``StartRun`` whose reply it lost) ends before it touches a run folder or a site."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from deploy.coordinator import launch_args
from fedumit.cli import main
from server.app import run
from server.config import RUN_DEFAULTS, RunConfig
from server.launch_claim import CLAIMS, checked_launch_id, claim_launch
from server.run_folder import RunFolder

REPO_ROOT = Path(__file__).resolve().parents[1]


class UntouchableGrid:
    """A Grid a duplicate ServerApp must never use: any use fails the test."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the duplicate ServerApp used the Grid ({name})")


def test_exactly_one_of_many_simultaneous_claims_wins(tmp_path: Path) -> None:
    def claim(flower_run: int) -> dict | None:
        return claim_launch(tmp_path, "L1", flower_run, tmp_path / f"folder-{flower_run}")

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(claim, range(16)))
    winners = [run_id for run_id, outcome in enumerate(outcomes) if outcome is None]
    assert len(winners) == 1
    record = json.loads((tmp_path / CLAIMS / "L1").read_text())
    assert record["flower_run"] == winners[0]
    assert record["folder"] == str(tmp_path / f"folder-{winners[0]}")
    later = claim_launch(tmp_path, "L1", 99, tmp_path / "other")
    assert later is not None and later["flower_run"] == winners[0]
    assert claim_launch(tmp_path, "L2", 99, tmp_path / "other") is None  # another launch


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".launches"])
def test_a_launch_id_that_is_not_a_plain_name_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="launch id"):
        claim_launch(tmp_path, bad, 1, tmp_path)


def test_a_second_start_of_a_fresh_launch_creates_no_run_folder(tmp_path: Path) -> None:
    config = RunConfig.from_flat({**RUN_DEFAULTS, "run-dir": str(tmp_path), "launch-id": "abc123"})
    first = tmp_path / "20260101-000000"
    assert claim_launch(tmp_path, "abc123", 7, first) is None
    folder = run(UntouchableGrid(), config, flower_run=8)
    assert folder.root == first
    assert sorted(path.name for path in tmp_path.iterdir()) == [CLAIMS]


def test_a_second_start_of_a_resume_leaves_the_run_folder_as_it_was(tmp_path: Path) -> None:
    saved = RunConfig.from_flat({**RUN_DEFAULTS, "run-dir": str(tmp_path), "run-id": "r1"})
    folder = RunFolder(tmp_path / "r1").create({"run": saved.to_dict()})
    before = sorted(path.name for path in folder.root.iterdir())
    resume = replace(saved, resume=str(folder.root), launch_id="resume-1")
    assert claim_launch(tmp_path, "resume-1", 7, folder.root) is None
    assert run(UntouchableGrid(), resume, flower_run=8).root == folder.root
    assert sorted(path.name for path in folder.root.iterdir()) == before  # not even a lock


def test_a_resumed_run_goes_on_under_the_new_launchs_id(tmp_path: Path) -> None:
    saved = RunConfig.from_flat({**RUN_DEFAULTS, "launch-id": "first", "seed": 5})
    folder = RunFolder(tmp_path / "r1").create({"run": saved.to_dict()})
    resumed = replace(saved, seed=0, resume=str(folder.root), launch_id="second").resuming()
    assert resumed.launch_id == "second" and resumed.seed == 5


def launch_id_of(args: list[str]) -> str:
    """The launch id ``launch_args`` put into the run config."""
    (value,) = [arg for arg in args if arg.startswith("launch-id=")]
    return value.removeprefix("launch-id=").strip("'")


def test_every_launch_gets_its_own_launch_id_unless_it_names_one() -> None:
    first, second = (launch_id_of(launch_args(REPO_ROOT, "fed", [], None, False)) for _ in "12")
    assert first != second and first.isalnum() and len(first) == 32
    named = launch_args(REPO_ROOT, "fed", [], None, False, launch_id="nightly-2026_12")
    assert launch_id_of(named) == "nightly-2026_12"


@pytest.mark.parametrize("bad", ["", "a b", "../x", "x" * 65, "id'; rm"])
def test_a_launch_id_flwr_could_not_carry_plainly_is_refused(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="launch id"):
        checked_launch_id(bad)
    with pytest.raises(SystemExit):
        main(["launch", "--federation", "fed", "--launch-id", bad])
    assert "launch id" in capsys.readouterr().err


def test_a_launch_that_cannot_start_says_why_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["launch", "--federation", "fed", "--resume", str(tmp_path / "none")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "Traceback" not in error
