"""Pixel mapping shortcuts give what the plain computation gives: the lookup table of every
stored level equals the float pipeline pixel for pixel, percentiles ranked on a regular grid of
a large image move its grey levels by at most one, and reading on several threads gives the
same samples as reading on one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from client.archive import load_site_samples
from client.archive.dicom import read_dicom_file, to_grey_uint8, to_unit
from client.archive.processing import (
    PERCENTILE_SAMPLES,
    integer_percentiles,
    stretch,
    to_uint8,
)
from client.config import ImagingConfig, load_site_config
from simulations.imaging_writers import write_dicom_image
from simulations.phantoms import chest_xray
from tests.archive_fixtures import good_archive, site_toml


def dataset(**elements) -> Dataset:
    data = Dataset()
    data.PhotometricInterpretation = "MONOCHROME2"
    for keyword, value in elements.items():
        setattr(data, keyword, value)
    return data


def noise(dtype: str, low: int, high: int, shape=(300, 200)) -> np.ndarray:
    return np.random.default_rng(7).integers(low, high, shape).astype(dtype)


TABLE_CASES = {
    "12-bit DX, percentile range": (noise("u2", 0, 4096), dataset(Modality="DX"), {}),
    "DX over the sampling size": (noise("u2", 0, 4096, (900, 700)), dataset(Modality="DX"), {}),
    "MONOCHROME1 with a file window": (
        noise("u2", 0, 4096),
        dataset(
            Modality="CR",
            PhotometricInterpretation="MONOCHROME1",
            WindowCenter=2000,
            WindowWidth=900,
        ),
        {},
    ),
    "signed CT, rescale, site window": (
        noise("i2", -1024, 3000),
        dataset(Modality="CT", RescaleSlope=1, RescaleIntercept=-1024),
        {"ct_window": (-600.0, 1500.0)},
    ),
    "MR with a fractional slope": (
        noise("u2", 0, 60000),
        dataset(Modality="MR", RescaleSlope=2.5, RescaleIntercept=-10),
        {"intensity_percentiles": (2.0, 98.0)},
    ),
    "file window ignored by choice": (
        noise("u2", 0, 4096),
        dataset(Modality="DX", WindowCenter=100, WindowWidth=50),
        {"prefer_file_window": False},
    ),
    "8-bit": (noise("u1", 0, 256), dataset(Modality="XC"), {}),
}


@pytest.mark.parametrize("case", TABLE_CASES)
def test_lookup_table_equals_the_float_pipeline(case: str) -> None:
    stored, data, settings = TABLE_CASES[case]
    imaging = ImagingConfig(**settings)
    table = to_grey_uint8(stored, data, imaging)
    assert table is not None and table.dtype == np.uint8 and table.shape == stored.shape
    np.testing.assert_array_equal(table, to_uint8(to_unit(stored, data, imaging)))
    assert table.std() > 1  # a real image, not a constant both paths agree on


def test_lookup_table_declines_what_it_cannot_reproduce() -> None:
    grey = noise("u2", 0, 4096)
    voi_lut = Dataset()
    voi_lut.LUTDescriptor = [4096, 0, 16]
    voi_lut.LUTData = list(range(4096))
    declined = {
        "colour": (noise("u1", 0, 256, (20, 20, 3)), dataset(PhotometricInterpretation="RGB")),
        "float": (grey.astype(np.float32), dataset()),
        "falling rescale": (grey, dataset(RescaleSlope=-1, RescaleIntercept=0)),
        "VOI LUT in use": (grey, dataset(VOILUTSequence=Sequence([voi_lut]))),
    }
    for name, (stored, data) in declined.items():
        assert to_grey_uint8(stored, data, ImagingConfig()) is None, name


def test_sampled_percentiles_move_grey_levels_by_at_most_one() -> None:
    stored, _ = chest_xray(np.random.default_rng(3), "nodule", size=1024)
    assert stored.size > 4 * PERCENTILE_SAMPLES  # the grid, not every pixel, is ranked
    values = stored.astype(np.float32)
    exact = to_uint8(stretch(values, *np.percentile(stored, (0.5, 99.5))))
    sampled = to_uint8(stretch(values, *integer_percentiles(stored, (0.5, 99.5))))
    assert np.abs(exact.astype(int) - sampled.astype(int)).max() <= 1


def test_small_images_rank_every_pixel_exactly() -> None:
    stored = noise("i2", -500, 500, (100, 90))
    percents = (0.5, 37.0, 99.5)
    np.testing.assert_allclose(
        integer_percentiles(stored, percents), np.percentile(stored, percents)
    )


def test_threads_read_the_same_samples_as_one(tmp_path: Path) -> None:
    good_archive(tmp_path / "archive")
    base = load_site_config(site_toml(tmp_path, tmp_path / "archive"))
    results = []
    for workers in (1, 3):
        config = base.__class__(
            **{**vars(base), "work_dir": tmp_path / f"work-{workers}", "decode_workers": workers}
        )
        samples, report = load_site_samples(config, canvas=112, slices=4)
        assert report.decoded == report.images_2d + report.volumes_3d > 1
        results.append({s.record_id: [image.tobytes() for image in s.images] for s in samples})
    assert results[0] == results[1]


def test_a_radiograph_file_reads_through_the_table(tmp_path: Path) -> None:
    """A written and re-read file takes the table path with its own window and inversion."""
    stored = noise("u2", 0, 4096)
    path = write_dicom_image(
        tmp_path / "image.dcm",
        stored,
        patient_id="P1",
        window=(1500.0, 1000.0),
        photometric="MONOCHROME1",
    )
    decoded = read_dicom_file(path, ImagingConfig())
    inverted = 1.0 - np.clip((stored.astype(np.float32) - 1000.0) / 1000.0, 0.0, 1.0)
    assert decoded.pixels.dtype == np.uint8 and not decoded.is_volume
    np.testing.assert_array_equal(decoded.pixels, to_uint8(inverted))
