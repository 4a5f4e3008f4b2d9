"""Bad input never stops a site: each problem is named, good records stay usable, the archive
is untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.archive import load_site_samples
from client.config import load_site_config
from fedumit.cli import main
from simulations.imaging_writers import write_dicom_image
from tests.archive_fixtures import good_archive, site_toml, tree_digest, write_manifest, xray


def bad_archive(tmp_path: Path) -> tuple[Path, list[dict]]:
    archive = tmp_path / "archive"
    records = good_archive(archive)
    full = write_dicom_image(archive / "bad" / "full.dcm", xray(), patient_id="P9")
    data = full.read_bytes()
    (archive / "bad" / "truncated.dcm").write_bytes(data[: len(data) - 2000])
    (archive / "bad" / "not-dicom.dcm").write_bytes(b"this is a spreadsheet, not an image")
    (archive / "bad" / "broken.nii").write_bytes(b"\x00" * 100)
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(data)
    (archive / "bad" / "link.dcm").symlink_to(outside)
    base = {"patient_id": "P9", "lang": "en", "split": "train", "task": "caption", "text": "x"}
    bad = [
        {**base, "id": "truncated", "images": ["bad/truncated.dcm"]},
        {**base, "id": "not-dicom", "images": ["bad/not-dicom.dcm"]},
        {**base, "id": "broken-nifti", "images": ["bad/broken.nii"]},
        {**base, "id": "escape", "images": ["../outside.dcm"]},
        {**base, "id": "symlink-out", "images": ["bad/link.dcm"]},
        {
            **base,
            "id": "box-outside",
            "task": "detection",
            "target": "x",
            "images": ["bad/full.dcm"],
            "boxes": [[10, 10, 500, 20]],
        },
        {**base, "id": "unknown-task", "task": "segmentation", "images": ["bad/full.dcm"]},
        {
            **base,
            "id": "label-range",
            "task": "classification",
            "question": "q",
            "options": ["a", "b"],
            "label": 5,
            "images": ["bad/full.dcm"],
        },
    ]
    write_manifest(archive, records + bad, extra_lines=['{"id": "json-broken", "task": '])
    return archive, records


EXPECTED_REASONS = {
    "truncated": "truncated",
    "not-dicom": "not a DICOM file",
    "broken-nifti": "unreadable NIfTI",
    "escape": "escapes the archive",
    "symlink-out": "leading out of the archive",
    "box-outside": "outside the image",
    "unknown-task": "unknown task",
    "label-range": "not an index",
}


def test_each_problem_is_named_and_good_records_survive(tmp_path: Path) -> None:
    archive, good = bad_archive(tmp_path)
    before = tree_digest(archive)
    config = load_site_config(site_toml(tmp_path, archive))
    samples, report = load_site_samples(config, canvas=112, slices=4)
    assert sorted(s.record_id for s in samples) == sorted(r["id"] for r in good)
    reasons = {p.record_id: p for p in report.problems}
    for record_id, words in EXPECTED_REASONS.items():
        assert words in reasons[record_id].reason, (record_id, reasons[record_id])
        assert reasons[record_id].line > 0 and reasons[record_id].file
    json_problem = [p for p in report.problems if "invalid JSON" in p.reason]
    assert len(json_problem) == 1 and json_problem[0].line == len(good) + 9
    assert reasons["truncated"].file == "bad/truncated.dcm"
    assert tree_digest(archive) == before
    assert not any(config.work_dir.is_relative_to(p) for p in (archive,))


def test_site_check_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    archive, good = bad_archive(tmp_path)
    toml = site_toml(tmp_path, archive)
    report_path = tmp_path / "report.json"
    assert main(["site", "check", "--site", str(toml), "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    assert "records skipped" in printed and "escapes the archive" in printed
    report = json.loads(report_path.read_text())
    assert report["usable"] == len(good) and report["patients"] == 2
    assert report["volumes_3d"] == 2 and report["images_2d"] == 3  # full.dcm decodes fine
    assert len(report["problems"]) == len(EXPECTED_REASONS) + 1
    write_manifest(archive, [], extra_lines=["not json"])
    assert main(["site", "check", "--site", str(toml)]) == 1


def test_an_unexpected_reader_error_is_one_records_problem(tmp_path: Path, monkeypatch) -> None:
    """A reader bug (not an :class:`UnreadableImage`) on one file stops that record only."""
    from client.archive import loader

    archive, good = bad_archive(tmp_path)
    decode = loader.decode

    def failing(path: Path, *args, **kwargs):
        if path.name == "full.dcm":
            raise ZeroDivisionError("a reader bug")
        return decode(path, *args, **kwargs)

    monkeypatch.setattr(loader, "decode", failing)
    config = load_site_config(site_toml(tmp_path, archive))
    samples, report = load_site_samples(config, canvas=112, slices=4)
    assert sorted(s.record_id for s in samples) == sorted(r["id"] for r in good)
    failed = [p for p in report.problems if "ZeroDivisionError" in p.reason]
    assert failed and all("unexpected error while reading" in p.reason for p in failed)


def test_site_check_reads_the_public_archive_too(tmp_path: Path, capsys) -> None:
    archive, _ = bad_archive(tmp_path)
    public = tmp_path / "public"
    public_records = good_archive(public)
    toml = site_toml(tmp_path, archive)
    with toml.open("a", encoding="utf-8") as file:
        file.write(f'[subspace]\npublic_archive = "{public}"\ndirections = 2\nrecords = 4\n')
        file.write(f'[contrast]\npublic_archive = "{public}"\n')
    report_path = tmp_path / "report.json"
    assert main(["site", "check", "--site", str(toml), "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    assert "[subspace] public archive" in printed and "hospital-test public archive:" in printed
    assert "[contrast] public archive: contrast images only" in printed
    assert "2 patient ids of the public archive are also in the site's archive" in printed
    report = json.loads(report_path.read_text())
    assert report["public_archive"]["usable"] == len(public_records)
    assert report["public_archive"]["shared_patient_ids"] == 2
    assert report["contrast_public_archive"]["usable"] == len(public_records)
    write_manifest(public, [], extra_lines=["not json"])
    assert main(["site", "check", "--site", str(toml)]) == 1  # no usable public record
