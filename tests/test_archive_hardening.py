"""Archive hardening: series geometry within decimal-string tolerance, mixed series keep their
largest stack, DICOMDIR references and series members stay inside the archive, size caps are
read from headers before decoding, decompression bombs are named; each time the archive's
other records still load from the same read."""

from __future__ import annotations

import math
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import nibabel.tests
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet
from rich.console import Console

import client.archive.dicom as dicom_reader
from client.archive import ArchiveReport, UnreadableImage, decode, load_site_samples
from client.archive.check import print_report
from client.config import ImagingConfig, SiteConfigError, load_site_config
from shared_model.sample import Sample
from simulations.imaging_writers import stable_uid, write_dicom_image, write_dicom_series
from tests.archive_fixtures import ct_volume, good_archive, site_toml, write_manifest, xray

MR_SMALL = Path(get_testdata_file("MR_small.dcm"))  # a real 64 x 64 MR slice
NIBABEL_DATA = Path(nibabel.tests.__file__).parent / "data"
SLICE_GAP = 5.0
BASE = {"patient_id": "P9", "lang": "en", "split": "train", "task": "caption", "text": "x"}


def oblique(decimals: int) -> list[str]:
    """A double-oblique ImageOrientationPatient (10 and 20 degrees) as decimal strings."""
    a, b = math.radians(10), math.radians(20)
    row = (math.cos(a), math.sin(a), 0.0)
    column = (-math.sin(a) * math.cos(b), math.cos(a) * math.cos(b), math.sin(b))
    return [f"{v:.{decimals}f}" for v in (*row, *column)]


SAGITTAL = ["0", "1", "0", "0", "0", "-1"]  # a localizer's plane


def mr_series(folder: Path, orientations: list[list[str]]) -> Path:
    """Copies of pydicom's MR_small.dcm as one series: slice ``k`` has the decimal strings
    ``orientations[k]`` and lies ``k * SLICE_GAP`` mm along that orientation's normal, its
    position written with 2 decimals on odd slices and 6 on even ones."""
    folder.mkdir(parents=True)
    for index, orientation in enumerate(orientations):
        dataset = pydicom.dcmread(MR_SMALL)
        normal = np.cross(*np.reshape(np.asarray(orientation, float), (2, 3)))
        position = np.asarray(dataset.ImagePositionPatient, float) + index * SLICE_GAP * normal
        dataset.ImageOrientationPatient = orientation
        dataset.ImagePositionPatient = [f"{v:.{2 if index % 2 else 6}f}" for v in position]
        dataset.InstanceNumber = index + 1
        dataset.SOPInstanceUID = stable_uid(folder.name, index)
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(folder / f"IM{index:04d}")
    return folder


def write_dicomdir(folder: Path, series: Path) -> Path:
    """A DICOMDIR written by pydicom's FileSet over copies of ``series``' slices."""
    fileset = FileSet()
    for file in sorted(series.iterdir()):
        dataset = pydicom.dcmread(file)
        dataset.StudyDate, dataset.StudyTime, dataset.StudyID = "20240101", "120000", "1"
        dataset.SeriesNumber = 1
        fileset.add(dataset)
    fileset.write(folder)
    return folder / "DICOMDIR"


def png_bomb(path: Path, width: int, height: int, text: bytes = b"") -> Path:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels (and a zTXt chunk of ``text``),
    a few kilobytes on disk. Written chunk by chunk with zlib: Pillow would first allocate
    the whole image in memory, which is what a bomb is meant to make a reader do."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    stream, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)  # filter byte + bits
    data = b"".join(stream.compress(row) for _ in range(height)) + stream.flush()
    comment = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(text, 9)) if text else b""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + header + comment + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def read(
    tmp_path: Path, archive: Path, records: list[dict], imaging: str = ""
) -> tuple[list[Sample], ArchiveReport]:
    """One read of ``archive`` with ``records`` as its manifest (and ``[imaging]`` lines)."""
    write_manifest(archive, records)
    toml = site_toml(tmp_path, archive)
    toml.write_text(toml.read_text() + f"[imaging]\n{imaging}", encoding="utf-8")
    return load_site_samples(load_site_config(toml), canvas=112, slices=4)


def assert_read(
    samples: list[Sample], report: ArchiveReport, good: list[dict], named: dict[str, str]
) -> None:
    """Every good record is a sample; every other record is a problem naming its file and
    the words in ``named``."""
    assert sorted(s.record_id for s in samples) == sorted(r["id"] for r in good)
    problems = {p.record_id: p for p in report.problems}
    assert set(problems) == set(named), report.problems
    for record_id, words in named.items():
        assert words in problems[record_id].reason, problems[record_id]
        assert problems[record_id].file and problems[record_id].line > 0


def test_orientation_strings_of_different_precision_are_one_series(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    good = good_archive(archive)
    precise, rounded = oblique(12), oblique(6)
    differences = np.abs(np.subtract(np.asarray(precise, float), np.asarray(rounded, float)))
    assert 1e-7 <= differences.max() < 1e-6  # the seventh decimal
    series = mr_series(archive / "mr", [precise if k % 2 else rounded for k in range(6)])
    volume = decode(series, ImagingConfig(), None)
    assert volume.pixels.shape == (6, 64, 64) and volume.warnings == ()
    assert volume.spacing[2] == pytest.approx(SLICE_GAP, abs=0.01)
    record = {**BASE, "id": "mr", "images": ["mr"]}
    samples, report = read(tmp_path, archive, [*good, record])
    assert_read(samples, report, [*good, record], {})
    assert report.warnings == []
    assert next(s for s in samples if s.record_id == "mr").geometries[0].depth == 6


def test_mixed_orientations_keep_the_largest_stack_with_a_warning(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    good = good_archive(archive)
    mr_series(archive / "mr", [SAGITTAL, SAGITTAL] + [oblique(6)] * 6)
    record = {**BASE, "id": "mr-mixed", "images": ["mr"]}
    for _ in range(2):  # decoded, then from the cache: the warning stays
        samples, report = read(tmp_path, archive, [*good, record])
        assert_read(samples, report, [*good, record], {})
        assert next(s for s in samples if s.record_id == "mr-mixed").geometries[0].depth == 6
        (warning,) = report.warnings
        assert (warning.record_id, warning.file, warning.line) == ("mr-mixed", "mr", len(good) + 1)
        assert warning.reason == (
            "mixed series: kept the largest stack of 6 slices, left out 2 with a different "
            "ImageOrientationPatient (IM0000, IM0001)"
        )
        assert report.to_dict()["warnings"][0]["reason"] == warning.reason
    assert report.cache_hits == report.images_2d + report.volumes_3d
    console = Console(record=True, width=200)
    print_report("hospital-test", report, console)
    printed = console.export_text()
    assert "1 records used in part" in printed and "record mr-mixed (line 6, mr)" in printed
    tie = mr_series(tmp_path / "tie", [SAGITTAL, SAGITTAL, oblique(6), oblique(6)])
    with pytest.raises(UnreadableImage, match="the largest two of 2 slices each"):
        decode(tie, ImagingConfig(), None)


def test_dicomdir_reference_leading_out_of_the_archive_is_named(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    good = good_archive(archive)
    staging = write_dicom_series(tmp_path / "staging", ct_volume(4), patient_id="P5")
    write_dicomdir(archive / "dd-good", staging)
    escaping = write_dicomdir(archive / "dd-escape", staging)
    shutil.copy(staging / "slice-0000.dcm", tmp_path / "outside.dcm")  # it exists, out there
    dataset = pydicom.dcmread(escaping)
    images = [r for r in dataset.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: '..' is no valid code string
        images[-1].ReferencedFileID = ["..", "..", "outside.dcm"]
    dataset.save_as(escaping)
    records = [
        {**BASE, "id": "dicomdir", "images": ["dd-good/DICOMDIR"]},
        {**BASE, "id": "dicomdir-escape", "images": ["dd-escape/DICOMDIR"]},
    ]
    samples, report = read(tmp_path, archive, [*good, *records])
    assert_read(
        samples,
        report,
        [*good, records[0]],
        {"dicomdir-escape": "DICOMDIR reference path 'dd-escape/../../outside.dcm' escapes"},
    )


def test_series_member_linking_out_of_the_archive_is_named(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    good = good_archive(archive)
    slice_file = archive / "p2" / "ct" / "slice-0003.dcm"
    outside = Path(shutil.copy(slice_file, tmp_path / "outside.dcm"))
    for name, target in (("linked-in", slice_file), ("linked-out", outside)):
        shutil.copytree(archive / "p2" / "ct", archive / name)
        (archive / name / slice_file.name).unlink()
        (archive / name / slice_file.name).symlink_to(target)
    records = [
        {**BASE, "id": "linked-in", "images": ["linked-in"]},
        {**BASE, "id": "linked-out", "images": ["linked-out"]},
    ]
    samples, report = read(tmp_path, archive, [*good, *records])
    assert_read(
        samples,
        report,
        [*good, records[0]],
        {"linked-out": "series member path 'linked-out/slice-0003.dcm' is a link leading out"},
    )


@pytest.mark.parametrize(
    "filters",
    [
        pytest.param(
            "ignored",
            marks=pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
        ),
        pytest.param(
            "raised", marks=pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
        ),
    ],
)
def test_decompression_bombs_are_named(tmp_path: Path, filters: str) -> None:
    """Pillow raises over twice its limit and warns over it: both are problems, whatever the
    process's warning filters do with the warning (raise it, or let the reader's own check
    catch the image)."""
    archive = tmp_path / "archive"
    good = good_archive(archive)
    png_bomb(archive / "bomb" / "error.png", 20_000, 20_000)  # 400 MP, Pillow raises
    png_bomb(archive / "bomb" / "warning.png", 10_000, 9_000)  # 90 MP, Pillow only warns
    png_bomb(archive / "bomb" / "text.png", 16, 16, text=bytes(4_000_000))
    assert all(p.stat().st_size < 100_000 for p in (archive / "bomb").iterdir())
    records = [{**BASE, "id": p, "images": [f"bomb/{p}.png"]} for p in ("error", "warning", "text")]
    samples, report = read(tmp_path, archive, [*good, *records])
    assert_read(
        samples,
        report,
        good,
        {
            "error": "decompression bomb",
            "warning": {
                "ignored": "decompression bomb (10000 x 9000 = 90,000,000 pixels, over Pillow's",
                "raised": "decompression bomb (Image size (90000000 pixels) exceeds limit",
            }[filters],
            "text": "Decompressed data too large",
        },
    )


def test_headers_over_the_default_caps_are_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file declares far more than it holds: decoding would fail otherwise (truncated
    data), and the DICOM pixel reader is never called for them."""
    archive = tmp_path / "archive"
    good = good_archive(archive)
    for name, rows, frames in (("huge.dcm", 65_535, None), ("frames.dcm", 2048, 1000)):
        path = write_dicom_image(archive / "big" / name, xray(), patient_id="P9")
        dataset = pydicom.dcmread(path)
        dataset.Rows = dataset.Columns = rows
        if frames:
            dataset.NumberOfFrames = frames
        dataset.save_as(path)
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.int16)
    with (archive / "big" / "huge.nii").open("wb") as handle:
        header.write_to(handle)
    decoded = []
    original = dicom_reader.frames
    monkeypatch.setattr(
        dicom_reader, "frames", lambda d, p: decoded.append(p.name) or original(d, p)
    )
    records = [
        {**BASE, "id": name, "images": [f"big/{name}"]}
        for name in ("huge.dcm", "frames.dcm", "huge.nii")
    ]
    samples, report = read(tmp_path, archive, [*good, *records])
    assert_read(
        samples,
        report,
        good,
        {
            "huge.dcm": "DICOM header declares 65535 x 65535 = 4,294,836,225 pixels per image, "
            "over [imaging] max_pixels = 100,000,000",
            "frames.dcm": "2048 x 2048 x 1000 = 4,194,304,000 voxels, over [imaging] max_voxels",
            "huge.nii": "NIfTI header declares 2000 x 2000 x 2000 = 8,000,000,000 voxels",
        },
    )
    assert all(p.reason.startswith("too large:") for p in report.problems)
    assert "cr.dcm" in decoded and not {"huge.dcm", "frames.dcm"} & set(decoded)


def test_configured_caps_refuse_real_files(tmp_path: Path) -> None:
    """Caps from the site config: pydicom's CT_small.dcm (128 x 128), nibabel's
    anatomical.nii (33 x 41 x 25) and an 8-slice series are over them; the good archive
    (at most 60 x 80 pixels and 40 x 40 x 6 voxels) is not."""
    archive = tmp_path / "archive"
    good = good_archive(archive)
    shutil.copy(get_testdata_file("CT_small.dcm"), archive / "ct-small.dcm")
    shutil.copy(NIBABEL_DATA / "anatomical.nii", archive / "anatomical.nii")
    write_dicom_series(archive / "ct8", ct_volume(8), patient_id="P8")
    records = [
        {**BASE, "id": name, "images": [name]} for name in ("ct-small.dcm", "anatomical.nii", "ct8")
    ]
    samples, report = read(
        tmp_path, archive, [*good, *records], "max_pixels = 5000\nmax_voxels = 10000\n"
    )
    assert_read(
        samples,
        report,
        good,
        {
            "ct-small.dcm": "128 x 128 = 16,384 pixels per image, over [imaging] max_pixels",
            "anatomical.nii": "33 x 41 x 25 = 33,825 voxels, over [imaging] max_voxels = 10,000",
            "ct8": "the series declares 40 x 40 x 8 = 12,800 voxels",
        },
    )


@pytest.mark.parametrize(
    "line, key",
    [
        ("max_pixels = 0", "imaging.max_pixels"),
        ("max_voxels = -5", "imaging.max_voxels"),
        ("max_voxels = 1.5e9", "imaging.max_voxels"),
        ("max_pixels = true", "imaging.max_pixels"),
    ],
)
def test_size_caps_are_validated(tmp_path: Path, line: str, key: str) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    toml = site_toml(tmp_path, archive)
    toml.write_text(toml.read_text() + f"[imaging]\n{line}\n", encoding="utf-8")
    with pytest.raises(SiteConfigError) as raised:
        load_site_config(toml)
    assert raised.value.key == key and raised.value.path == toml.resolve()
    defaults = load_site_config(site_toml(tmp_path, archive)).imaging
    assert (defaults.max_pixels, defaults.max_voxels) == (100_000_000, 2_000_000_000)
