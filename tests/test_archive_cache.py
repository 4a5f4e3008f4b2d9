"""The pixel cache decodes each file once: keyed by content and settings, files re-hashed only
when their stat changed, torn or corrupt entries rebuilt."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from client.archive import ArchiveReader, ArchiveReport
from client.archive.cache import CACHE_VERSION, INDEX_NAME
from client.config import SiteConfig, load_site_config
from simulations.imaging_writers import write_dicom_image
from tests.archive_fixtures import good_archive, site_toml, xray

IMAGES, FILES = 4, 9  # a DICOM file, a 6-file series, a NIfTI file and a PNG


def archive_site(tmp_path: Path, aged: bool = True) -> tuple[Path, SiteConfig]:
    """The good archive and its site; ``aged`` dates every file an hour back, as an export
    written well before it is read (a file changed within ``RACY_NS`` is always re-hashed)."""
    archive = tmp_path / "archive"
    good_archive(archive)
    if aged:
        for file in archive.rglob("*"):
            age(file, 3600)
    return archive, load_site_config(site_toml(tmp_path, archive))


def age(file: Path, seconds: float) -> None:
    """Set the modification time of ``file`` ``seconds`` into the past (its content stays)."""
    then = time.time_ns() - int(seconds * 1e9)
    os.utime(file, ns=(then, then))


def read(config: SiteConfig, canvas: int = 112) -> tuple[ArchiveReport, int, list]:
    """One pass in a fresh reader: its report, files hashed, and every sample's images."""
    reader = ArchiveReader(config, canvas, 4)
    samples, report = reader.read()
    assert report.problems == []
    return report, reader.cache.digests.hashed, [s.images for s in samples]


def test_second_pass_decodes_and_hashes_nothing(tmp_path: Path) -> None:
    archive, config = archive_site(tmp_path)
    report, hashed, first = read(config)
    assert (report.decoded, report.cache_hits, hashed) == (IMAGES, 0, FILES)
    assert (config.cache_dir / INDEX_NAME).is_file()
    assert not any(p.is_relative_to(archive) for p in config.cache_dir.rglob("*"))
    report, hashed, again = read(config)
    assert (report.decoded, report.cache_hits, hashed) == (0, IMAGES, 0)
    for a, b in zip(first, again, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_changed_file_is_decoded_again_alone(tmp_path: Path) -> None:
    archive, config = archive_site(tmp_path)
    read(config)
    write_dicom_image(
        archive / "p1" / "cr.dcm", xray() + 7, patient_id="P1", modality="CR", window=(2000, 4000)
    )
    report, hashed, _ = read(config)
    assert (report.decoded, report.cache_hits, hashed) == (1, IMAGES - 1, 1)


def test_changed_series_slice_is_hashed_and_decoded_alone(tmp_path: Path) -> None:
    archive, config = archive_site(tmp_path)
    read(config)
    slice_file = sorted((archive / "p2" / "ct").iterdir())[2]
    data = bytearray(slice_file.read_bytes())
    data[-1] ^= 0xFF  # one stored pixel value
    slice_file.write_bytes(data)
    report, hashed, _ = read(config)
    assert (report.decoded, report.cache_hits, hashed) == (1, IMAGES - 1, 1)


def test_stat_change_with_same_content_is_rehashed_not_decoded(tmp_path: Path) -> None:
    archive, config = archive_site(tmp_path)
    read(config)
    age(archive / "p1" / "cr.dcm", 7200)  # touched: other mtime and ctime
    copy = archive / "p1" / "photo.copy"
    copy.write_bytes((archive / "p1" / "photo.png").read_bytes())
    age(copy, 3600)
    copy.replace(archive / "p1" / "photo.png")  # same bytes under another inode
    report, hashed, _ = read(config)
    assert (report.decoded, report.cache_hits, hashed) == (0, IMAGES, 2)
    report, hashed, _ = read(config)
    assert hashed == 0


def test_recently_modified_files_are_always_rehashed(tmp_path: Path) -> None:
    """A file may change again within its filesystem's timestamp tick without a stat change,
    so one modified less than ``RACY_NS`` before it was hashed is not trusted to the index."""
    _, config = archive_site(tmp_path, aged=False)
    read(config)
    report, hashed, _ = read(config)
    assert (report.decoded, report.cache_hits, hashed) == (0, IMAGES, FILES)


def _flip_pixel(data: bytes) -> bytes:
    return data[:-100] + bytes([data[-100] ^ 1]) + data[-99:]


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda data: b"corrupt",
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "zero-filled": lambda data: bytes(len(data)),
    "zeroed-tail": lambda data: data[:-4096] + bytes(4096),
    "one-pixel": _flip_pixel,
    "longer": lambda data: data + b"\0",
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_torn_or_corrupt_entry_is_rebuilt(
    tmp_path: Path, corrupt: Callable[[bytes], bytes]
) -> None:
    archive, config = archive_site(tmp_path)
    _, _, first = read(config)
    reader = ArchiveReader(config, 112, 4)
    key = reader.cache.key(archive / "p2" / "ct.nii.gz")
    (entry,) = config.cache_dir.rglob(f"{key}.*")
    entry.write_bytes(corrupt(entry.read_bytes()))
    assert reader.cache.get(key) is None
    samples, report = reader.read()
    assert (report.decoded, report.cache_hits, report.problems) == (1, IMAGES - 1, [])
    for a, b in zip(first, [s.images for s in samples], strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert reader.cache.get(key) is not None


UNREADABLE_INDEXES = ["", "{", "null", json.dumps({"version": CACHE_VERSION, "files": []})]


@pytest.mark.parametrize("index", UNREADABLE_INDEXES)
def test_unreadable_index_only_costs_hashing(tmp_path: Path, index: str) -> None:
    _, config = archive_site(tmp_path)
    read(config)
    (config.cache_dir / INDEX_NAME).write_text(index, encoding="utf-8")
    report, hashed, _ = read(config)
    assert (report.decoded, report.cache_hits, hashed) == (0, IMAGES, FILES)


def test_changed_setting_invalidates(tmp_path: Path) -> None:
    _, config = archive_site(tmp_path)
    read(config)
    report, hashed, _ = read(config, canvas=224)
    assert (report.decoded, report.cache_hits, hashed) == (IMAGES, 0, 0)
    report, _, _ = read(config)  # the first settings' entries are still there
    assert (report.decoded, report.cache_hits) == (0, IMAGES)
