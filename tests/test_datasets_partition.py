"""Patient-level partitioning across virtual hospitals, and ``fedumit simulate --dataset``."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fedumit.cli import build_parser
from simulations.datasets.archive import PublicDataset, png_of_array
from simulations.datasets.partition import partition_patients, write_sites
from simulations.defaults import fill_schedule_defaults
from simulations.experiment import site_archives
from tests.conftest import SHARED_DATA
from tests.dataset_fixtures import check_archive

MODALITIES = ("CR", "CT", "MR")


def cohort(patients: int = 240) -> PublicDataset:
    """Patients with three records each (train/val/test by patient), two labels, 3 modalities."""
    dataset = PublicDataset("cohort")
    pixels = np.full((8, 8), 100, dtype=np.uint8)
    for number in range(patients):
        patient = f"P{number:03d}"
        label = "pneumonia" if number % 3 else "normal"
        split = ("train", "train", "train", "val", "test")[number % 5]
        image = f"{patient}.png"
        dataset.files[image] = png_of_array(pixels)
        for visit in range(3):
            record = {
                "id": f"{patient}-{visit}",
                "patient_id": patient,
                "task": "classification",
                "lang": "en",
                "split": split,
                "images": [image],
                "modality": MODALITIES[number % 3 if number < 200 else 0],
                "question": "What is shown?",
                "options": ["normal", "pneumonia"],
                "label": int(label == "pneumonia"),
            }
            dataset.add(record, label)
    return dataset


def assert_disjoint_cover(groups: list[list[str]], dataset: PublicDataset) -> None:
    flat = [p for group in groups for p in group]
    assert len(flat) == len(set(flat)) and set(flat) == set(dataset.patients())
    assert all(groups)


def normal_share(groups: list[list[str]], dataset: PublicDataset) -> list[float]:
    return [sum(dataset.labels[p] == "normal" for p in g) / len(g) for g in groups]


def test_iid_and_dirichlet_keep_patients_whole_and_dirichlet_skews() -> None:
    dataset = cohort()
    iid = partition_patients(dataset, 4, "iid", seed=1)
    dirichlet = partition_patients(dataset, 4, "dirichlet", seed=1, alpha=0.3)
    for groups in (iid, dirichlet):
        assert_disjoint_cover(groups, dataset)
    assert max(len(g) for g in iid) - min(len(g) for g in iid) <= 1
    iid_spread, skewed_spread = (np.ptp(normal_share(g, dataset)) for g in (iid, dirichlet))
    assert iid_spread < 0.2 < skewed_spread
    assert partition_patients(dataset, 4, "dirichlet", seed=1, alpha=0.3) == dirichlet


@pytest.mark.parametrize("sites", [2, 3, 5])
def test_modality_partition_specialises_sites(sites: int) -> None:
    dataset = cohort()
    groups = partition_patients(dataset, sites, "modality")
    assert_disjoint_cover(groups, dataset)
    assert len(groups) == sites
    modalities = dataset.modalities()
    per_site = [Counter(modalities[p] for p in group) for group in groups]
    if sites >= 3:
        assert all(len(counter) == 1 for counter in per_site)
    assert {m for counter in per_site for m in counter} == set(MODALITIES)


def test_partition_errors_name_the_cause() -> None:
    single = cohort(30)
    single.records = [{**r, "modality": "CR"} for r in single.records]
    with pytest.raises(ValueError, match="at least two modalities"):
        partition_patients(single, 2, "modality")
    with pytest.raises(ValueError, match="cannot split"):
        partition_patients(single, 31)
    with pytest.raises(ValueError, match="unknown partition"):
        partition_patients(single, 2, "by-age")


def test_sites_keep_every_patient_and_split(tmp_path: Path) -> None:
    dataset = cohort(60)
    sites = write_sites(dataset, tmp_path, sites=3, method="dirichlet", seed=2)
    assert [s.name for s in sites] == ["cohort-a", "cohort-b", "cohort-c"]
    records = [r for s in sites for r in check_archive(s, tmp_path / "work" / s.name)]
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in dataset.records)
    assert Counter(r["split"] for r in records) == dataset.split_counts()
    owner = {}
    for site in sites:
        for record in check_archive(site, tmp_path / "work" / site.name):
            assert owner.setdefault(record["patient_id"], site.name) == site.name


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"public data folder {SHARED_DATA} is absent")
def test_simulate_arguments_write_public_sites(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "simulate",
            "--dataset",
            "pneumoniamnist",
            "--data-root",
            str(SHARED_DATA),
            "--partition",
            "dirichlet",
            "--sites",
            "2",
            "--limit",
            "20",
            "--out",
            str(tmp_path),
        ]
    )
    sites = site_archives(argparse.Namespace(**{**vars(args), "out": tmp_path}))
    assert [s.name for s in sites] == ["pneumoniamnist-a", "pneumoniamnist-b"]
    records = [r for s in sites for r in check_archive(s, tmp_path / "work" / s.name)]
    assert Counter(r["split"] for r in records) == {"train": 40, "val": 40, "test": 40}


def test_hold_out_val_moves_whole_train_patients_only() -> None:
    dataset = cohort(50)
    for record in dataset.records:
        record["split"] = "train" if record["split"] == "val" else record["split"]
    tests_before = [r["id"] for r in dataset.records if r["split"] == "test"]
    dataset.hold_out_val(0.25, seed=3)
    splits: dict[str, set[str]] = {}
    for record in dataset.records:
        splits.setdefault(record["patient_id"], set()).add(record["split"])
    assert sum(s == {"val"} for s in splits.values()) == 10
    assert all(len(s) == 1 for s in splits.values())
    assert [r["id"] for r in dataset.records if r["split"] == "test"] == tests_before


def test_public_stand_ins_are_train_patients_no_hospital_gets(tmp_path: Path) -> None:
    dataset = cohort(50)
    before = {r["id"] for r in dataset.records}
    public = dataset.split_off_public(6, seed=1)
    public_patients = set(public.patients())
    assert len(public_patients) == 6 and public.name == "cohort-public"
    assert {r["split"] for r in public.records} == {"train"}
    assert public_patients.isdisjoint(dataset.patients())
    assert {r["id"] for r in public.records} | {r["id"] for r in dataset.records} == before
    written = check_archive(public.write_archive(tmp_path / "public"), tmp_path / "work")
    assert {r["patient_id"] for r in written} == public_patients
    sites = write_sites(dataset, tmp_path / "sites", sites=3, seed=0)
    site_patients = {r["patient_id"] for s in sites for r in check_archive(s, tmp_path / s.name)}
    assert site_patients.isdisjoint(public_patients)
    assert len(cohort(50).split_off_public(31).patients()) == 7  # a quarter of 30 at most
    with pytest.raises(ValueError, match="3 train patients, none to set apart"):
        cohort(5).split_off_public(1)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"public data folder {SHARED_DATA} is absent")
@pytest.mark.parametrize(("asked", "public_patients"), [((), 5), (("--public-patients", "3"), 3)])
def test_contrast_sets_public_patients_apart(tmp_path: Path, asked, public_patients) -> None:
    from rich.console import Console

    from simulations.experiment import contrast_table

    argv = ["simulate", "--dataset", "pneumoniamnist", "--data-root", str(SHARED_DATA), *asked]
    argv += ["--sites", "2", "--limit", "20", "--contrast", "1", "--out", str(tmp_path)]
    parsed = fill_schedule_defaults(build_parser().parse_args(argv))
    args = argparse.Namespace(**{**vars(parsed), "out": tmp_path})
    sites = site_archives(args)
    table = contrast_table(args, tmp_path, Console(quiet=True))
    public = check_archive(Path(table["public_archive"]), tmp_path / "work" / "public")
    records = [r for s in sites for r in check_archive(s, tmp_path / "work" / s.name)]
    assert {r["split"] for r in public} == {"train"}
    # the default asks for more than a quarter of the 20 train patients: a quarter it gets
    assert len({r["patient_id"] for r in public}) == public_patients
    train = (20 - public_patients) * 2  # two records a patient, the rest to the hospitals
    assert Counter(r["split"] for r in records) == {"train": train, "val": 40, "test": 40}
    assert {r["patient_id"] for r in public}.isdisjoint(r["patient_id"] for r in records)
