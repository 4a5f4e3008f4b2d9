"""``benchmarks/warm_start_sweep.py``: a warm start's round 0 by public patients and steps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from simulations.datasets import public_archives
from tests.conftest import SHARED_DATA, load_benchmark


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"public data folder {SHARED_DATA} is absent")
def test_the_sweep_scores_each_settings_warm_start_on_the_same_held_out_questions(
    tmp_path: Path, monkeypatch, tiny_base
) -> None:
    sweep = load_benchmark("warm_start_sweep.py")
    out = tmp_path / "sweep"
    argv = ["warm_start_sweep.py", "--data-root", str(SHARED_DATA), "--limit", "24"]
    argv += ["--public-patients", "2", "50", "--steps", "1", "3", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    sweep.main()
    result = json.loads(out.with_suffix(".json").read_text())
    rows = result["rows"]
    # 50 asked, a quarter of the 24 train patients given: what was set apart is reported
    assert [(row["public_patients"], row["steps"]) for row in rows] == [
        (2, 1), (2, 3), (6, 1), (6, 3)
    ]  # fmt: skip
    for row in rows:
        for split in ("val", "test"):
            assert set(row[split]) == {
                "classification/en/accuracy",
                "classification/en/well_formed",
                "classification/en/option_auc",
            }
            assert all(0.0 <= value <= 1.0 for value in row[split].values())
    # the majority answer's share of the 24 held-out images of each split (of two classes)
    for split in ("val", "test"):
        assert 0.5 <= result["majority"][split]["classification/en/accuracy"] <= 1.0
    # different settings train different bases: their answers' likelihoods differ
    assert len({row["val"]["classification/en/option_auc"] for row in rows}) > 1


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"public data folder {SHARED_DATA} is absent")
def test_only_closed_questions_are_scored(tmp_path: Path, tiny_spec) -> None:
    sweep = load_benchmark("warm_start_sweep.py")
    archives = public_archives("vqa-rad", tmp_path / "vqa", data_root=SHARED_DATA, limit=40)
    samples = sweep.closed_samples(archives, tiny_spec, "test", tmp_path / "work")
    assert samples and {s.task for s in samples} == {"vqa"}
    assert all(s.fields.get("options") for s in samples)
