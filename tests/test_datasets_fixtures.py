"""SLAKE, IU X-Ray and ISBI 2015 converters on tiny copies written in their release formats."""

from __future__ import annotations

from pathlib import Path

from simulations.datasets import convert
from simulations.datasets.isbi2015 import LANDMARKS
from tests.archive_fixtures import tree_digest
from tests.dataset_fixtures import (
    check_archive,
    isbi_points,
    write_isbi,
    write_iu_xray,
    write_slake,
)


def test_slake_bilingual_questions_and_boxes(tmp_path: Path) -> None:
    source = write_slake(tmp_path / "data" / "slake")
    before = tree_digest(source)
    dataset = convert("slake", tmp_path / "data")
    records = check_archive(dataset.write_archive(tmp_path / "site"), tmp_path / "work")
    assert tree_digest(source) == before
    by_id = {r["id"]: r for r in records}
    assert {r["lang"] for r in records if r["task"] == "vqa"} == {"en", "zh"}
    assert by_id["slake-train-0"]["options"] == ["yes", "no"]
    assert by_id["slake-train-0"]["answer"] == "yes"
    assert by_id["slake-train-1"]["options"] == ["是", "否"]
    assert "options" not in by_id["slake-train-2"] and "options" not in by_id["slake-train-4"]
    assert by_id["slake-val-5"]["split"] == "val"
    assert by_id["slake-test-6"]["split"] == "test"
    assert by_id["slake-test-6"]["modality"] == "CR"
    assert by_id["slake-1-detect-kidney"]["boxes"] == [[5, 30, 13, 40], [40, 30, 48, 40]]
    assert by_id["slake-1-detect-liver"]["boxes"] == [[10, 12, 30, 27]]
    assert by_id["slake-1-detect-liver"]["split"] == "train"
    assert [r["task"] for r in records].count("detection") == 2
    captions = {r["patient_id"]: r for r in records if r["task"] == "caption"}
    assert captions["slake-1"]["text"] == "A CT image of the abdomen."
    assert captions["slake-3"]["text"] == "An X-ray of the lung."
    assert captions["slake-3"]["split"] == "test"
    assert dataset.labels == {"slake-1": "Abdomen", "slake-2": "Abdomen", "slake-3": "Lung"}


def test_iu_xray_reports_per_view(tmp_path: Path) -> None:
    write_iu_xray(tmp_path / "iu_xray")
    dataset = convert("iu-xray", tmp_path)
    records = check_archive(dataset.write_archive(tmp_path / "site"), tmp_path / "work")
    reports = [r for r in records if r["task"] == "report"]
    assert len(reports) == 6
    assert dataset.split_counts() == {"train": 4, "val": 4, "test": 4}
    captions = {r["images"][0]: r["text"] for r in records if r["task"] == "caption"}
    assert captions == {r["images"][0]: r["report"] for r in reports}
    first = [r for r in reports if r["patient_id"] == "CXR1"]
    assert [r["images"] for r in first] == [
        ["images/CXR1_IM-0001/0.png"],
        ["images/CXR1_IM-0001/1.png"],
    ]
    assert first[0]["report"] == "The lungs are clear. Study 1."
    assert len(convert("iu-xray", tmp_path, limit=0).records) == 0


def test_isbi_landmarks_average_the_doctors(tmp_path: Path) -> None:
    write_isbi(tmp_path / "isbi2015")
    dataset = convert("isbi2015", tmp_path)
    records = check_archive(dataset.write_archive(tmp_path / "site"), tmp_path / "work")
    assert len(records) == 4 * (len(LANDMARKS) + 1)
    assert dataset.split_counts() == {"train": 40, "test": 40}
    point = {(r["patient_id"], r["landmark"]): r["point"] for r in records if "point" in r}
    senior, junior = isbi_points("001", 0)[2], isbi_points("001", 2)[2]
    assert point[("isbi-001", "orbitale")] == [
        (s + j) / 2 for s, j in zip(senior, junior, strict=True)
    ]
    assert point[("isbi-301", "articulare")] == list(isbi_points("301", 0)[18])
    assert {r["split"] for r in records if r["patient_id"] == "isbi-151"} == {"test"}
    assert (tmp_path / "site" / "images" / "001.png").is_file()
    assert len(convert("isbi2015", tmp_path, limit=1).patients()) == 3
