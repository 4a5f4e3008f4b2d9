"""VQA-RAD, PneumoniaMNIST and AdrenalMNIST3D converted from the real files in ../shared/data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from simulations.datasets import convert, public_archives
from simulations.datasets.partition import write_sites
from tests.conftest import SHARED_DATA
from tests.dataset_fixtures import check_archive

pytestmark = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"public data folder {SHARED_DATA} is absent"
)


def task_splits(records: list[dict], task: str) -> Counter:
    return Counter(r["split"] for r in records if r["task"] == task)


def test_vqa_rad_official_split_across_sites(tmp_path: Path) -> None:
    dataset = convert("vqa-rad", SHARED_DATA)
    assert task_splits(dataset.records, "vqa") == {"train": 1797, "test": 451}
    assert task_splits(dataset.records, "caption") == {"train": 313, "test": 1}
    closed = [r for r in dataset.records if "options" in r]
    assert all(r["options"] == ["yes", "no"] and r["answer"] in r["options"] for r in closed)
    assert len(closed) == 1193
    assert len(dataset.patients()) == 314
    sites = write_sites(dataset, tmp_path / "archives", sites=3, method="modality")
    per_site = {s.name: check_archive(s, tmp_path / "work" / s.name) for s in sites}
    records = [r for site in per_site.values() for r in site]
    assert task_splits(records, "vqa") == {"train": 1797, "test": 451}
    owners = {(r["patient_id"], name) for name, site in per_site.items() for r in site}
    assert len(owners) == 314
    assert {r.get("modality") for r in records} >= {"CR", "CT", "MR"}
    modalities = [{r.get("modality") for r in site} for site in per_site.values()]
    assert [len(m) for m in modalities] == [1, 1, 2]


def test_vqa_rad_gets_a_val_split_from_train_patients(tmp_path: Path) -> None:
    sites = public_archives("vqa-rad", tmp_path, data_root=SHARED_DATA, sites=2, limit=60)
    records = [r for s in sites for r in check_archive(s, tmp_path / "work" / s.name)]
    vqa = task_splits(records, "vqa")
    assert vqa["test"] == 60 and vqa["train"] + vqa["val"] == 60 and vqa["val"] > 0


def test_pneumoniamnist_counts_and_archives(tmp_path: Path) -> None:
    source = SHARED_DATA / "medmnist"
    full = convert("pneumoniamnist", SHARED_DATA).records
    assert task_splits(full, "classification") == {"train": 3882, "val": 524, "test": 624}
    dataset = convert("pneumoniamnist", SHARED_DATA, limit=12)
    assert task_splits(dataset.records, "caption") == {"train": 12, "val": 12, "test": 12}
    sites = write_sites(dataset, tmp_path / "archives", sites=2, method="iid")
    records = [r for s in sites for r in check_archive(s, tmp_path / "work" / s.name)]
    assert len(records) == 72 and {r["modality"] for r in records} == {"CR"}
    first = next(r for r in records if r["id"] == "pneumoniamnist-test-00000")
    assert first["options"] == ["normal", "pneumonia"] and first["split"] == "test"
    assert not any(source.glob("*.png"))


def test_adrenalmnist3d_counts_and_volumes(tmp_path: Path) -> None:
    dataset = convert("adrenalmnist3d", SHARED_DATA)
    assert task_splits(dataset.records, "classification") == {"train": 1188, "val": 98, "test": 298}
    chosen = [
        f"adrenalmnist3d-{split}-0000{i}" for split in ("train", "val", "test") for i in (0, 1)
    ]
    records = check_archive(dataset.write_archive(tmp_path / "adrenal", chosen), tmp_path / "work")
    assert len(records) == 12
    assert all(r["images"][0].endswith(".nii.gz") and "modality" not in r for r in records)
