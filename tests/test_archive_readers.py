"""Readers: pydicom's bundled files, a shuffled CT series, the same volume as NIfTI, geometry."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from client.archive import UnreadableImage, decode, load_site_samples
from client.archive.processing import window
from client.config import ImagingConfig, load_site_config
from shared_model.sample import Geometry
from tests.archive_fixtures import SPACING, ct_volume, good_archive, site_toml

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
COMPRESSED = {
    "JPEG baseline": "SC_rgb_jpeg_dcmtk.dcm",
    "JPEG extended": "JPGExtended.dcm",
    "JPEG-LS": "MR_small_jpeg_ls_lossless.dcm",
    "JPEG 2000": "MR_small_jp2klossless.dcm",
    "RLE": "MR_small_RLE.dcm",
}


def bundled_files() -> list[Path]:
    return sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file() and p.suffix in ("", ".dcm"))


def test_every_bundled_file_decodes_or_says_why() -> None:
    decoded, reported = 0, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in bundled_files():
            try:
                image = decode(path, ImagingConfig(), None)
            except UnreadableImage as error:
                assert error.reason and error.path  # names the file it could not read
                reported[path.name] = error.reason
                continue
            pixels = image.unit()
            assert np.isfinite(pixels).all() and 0.0 <= pixels.min() <= pixels.max() <= 1.0
            assert pixels.ndim in (2, 3, 4)
            decoded += 1
    assert decoded >= 50
    assert any("no pixel data" in r for r in reported.values())
    assert any("truncated" in r for r in reported.values())


@pytest.mark.parametrize("syntax, name", sorted(COMPRESSED.items()))
def test_compressed_syntaxes_decode(syntax: str, name: str) -> None:
    path = PYDICOM_FILES / name
    image = decode(path, ImagingConfig(), None)
    assert image.unit().std() > 0.01, syntax


def test_ct_series_is_sorted_by_geometry_with_rescale_and_window(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    good_archive(archive)
    series = decode(archive / "p2" / "ct", ImagingConfig(), None)
    assert series.is_volume and series.pixels.shape == (6, 40, 40)
    assert series.spacing == pytest.approx(SPACING)
    assert series.patient_id == "P2" and series.modality == "CT"
    expected = window(ct_volume(), 40.0, 400.0)  # the file's own window, after rescale
    np.testing.assert_allclose(series.pixels, expected, atol=1e-6)
    lung = decode(
        archive / "p2" / "ct",
        ImagingConfig(prefer_file_window=False, ct_window=(-600.0, 1500.0)),
        None,
    )
    np.testing.assert_allclose(lung.pixels, window(ct_volume(), -600.0, 1500.0), atol=1e-6)


def test_nifti_of_the_same_volume_gives_the_same_slices(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    good_archive(archive)
    series = decode(archive / "p2" / "ct", ImagingConfig(prefer_file_window=False), None)
    nifti = decode(archive / "p2" / "ct.nii.gz", ImagingConfig(), "CT")
    assert nifti.spacing == pytest.approx(SPACING)
    np.testing.assert_allclose(nifti.pixels, series.pixels, atol=1e-6)


@pytest.mark.parametrize("size", [(60, 80, None), (40, 40, 6), (1935, 2400, None)])
def test_boxes_and_points_survive_the_round_trip(size) -> None:
    width, height, depth = size
    geometry = Geometry(width, height, 112, depth)
    rng = np.random.default_rng(0)
    for _ in range(50):
        point = [rng.uniform(0, width), rng.uniform(0, height)]
        if depth:
            point.append(rng.uniform(0, depth))
        back = geometry.point_to_source(geometry.point_to_grid(point))
        assert np.abs(np.subtract(back, point)).max() < 1.0
        grid = [round(v) for v in geometry.point_to_grid(point)]  # what the model writes
        assert (
            np.abs(np.subtract(geometry.point_to_source(grid), point)).max()
            <= max(width, height) / 1000 + 1e-9 + (depth or 0) / 1000
        )


def test_samples_carry_grid_coordinates_and_patient_ids(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    good_archive(archive)
    config = load_site_config(site_toml(tmp_path, archive))
    samples, report = load_site_samples(config, canvas=112, slices=4)
    assert report.problems == [] and report.usable == 5
    by_id = {s.record_id: s for s in samples}
    detection = by_id["cr-det"]
    assert detection.images[0].shape == (112, 112, 1)  # grey keeps one channel
    box = Geometry.from_dict(detection.geometries[0].to_dict()).box_to_source(
        detection.fields["boxes"][0]
    )
    np.testing.assert_allclose(box, [50, 20, 60, 30], atol=1e-6)
    landmark = by_id["ct-lm"]
    assert landmark.patient_id == "P2"  # from the DICOM Patient ID
    assert landmark.images[0].shape == (4, 112, 112, 1)
    np.testing.assert_allclose(
        landmark.geometries[0].point_to_source(landmark.fields["point"]), [27, 13, 3], atol=1e-6
    )
    canvas = detection.images[0][..., 0].astype(int)
    bright = np.argwhere(canvas > 150)
    x1, y1, x2, y2 = (v * 112 / 1000 for v in detection.fields["boxes"][0])
    assert x1 - 1 <= bright[:, 1].min() and bright[:, 1].max() <= x2 + 1
    assert y1 - 1 <= bright[:, 0].min() and bright[:, 0].max() <= y2 + 1
