"""The synthetic hospitals are the same bytes however many processes write them, and their
radiographs show the site what their records ask about."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from client.archive.dicom import read_dicom_file
from client.config import ImagingConfig
from simulations.experiment import write_hospitals
from simulations.phantoms import HOSPITAL_SCANNER
from simulations.synthetic import (
    HospitalProfile,
    consortium_profiles,
    generate_consortium,
    write_hospital,
)


def digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_hospitals_written_on_two_processes_match_those_written_in_one(tmp_path) -> None:
    profiles = consortium_profiles(n_sites=3, patients=8, seed=5)
    serial = generate_consortium(tmp_path / "serial", n_sites=3, patients=8, seed=5)
    parallel = write_hospitals(tmp_path / "parallel", profiles, workers=2)
    assert [p.name for p in parallel] == [p.name for p in serial] == [p.name for p in profiles]
    written = digests(tmp_path / "parallel")
    assert written == digests(tmp_path / "serial")
    assert sum(name.endswith("manifest.jsonl") for name in written) == 3
    assert sum(name.endswith(".dcm") for name in written) > 3 * 8  # radiographs and series


def test_a_hospital_that_cannot_be_written_fails_the_call(tmp_path) -> None:
    (tmp_path / "hospital-b").write_text("a file where a folder must go")
    profiles = consortium_profiles(n_sites=2, patients=4, seed=1)
    with pytest.raises(OSError, match="hospital-b"):
        write_hospitals(tmp_path, profiles, workers=2)


def test_radiographs_carry_their_window_and_show_the_marker(tmp_path) -> None:
    """Read as a site reads them, the marker's ring stands out of the body around it, and the
    body has one grey level in every radiograph; the percentile stretch a file without a window
    gets moves the body's grey with what else the image holds, and in images without a bright
    lesion clips the ring and the body alike to near white."""
    profile = HospitalProfile("hospital-w", 6, 0.5, 0.0, (0.25,) * 4, seed=11)
    archive = write_hospital(tmp_path / "hospital-w", profile)
    records = [json.loads(line) for line in (archive / "manifest.jsonl").read_text().splitlines()]
    points = [r for r in records if r["task"] == "landmark"]
    assert len(points) == 12  # two radiographs a patient
    ring, body = {"file": [], "percentile": []}, {"file": [], "percentile": []}
    for record in points:
        path = archive / record["images"][0]
        header = pydicom.dcmread(path, stop_before_pixels=True)
        assert (float(header.WindowCenter), float(header.WindowWidth)) == HOSPITAL_SCANNER.window
        x, y = (round(v) for v in record["point"])
        for name, imaging in (
            ("file", ImagingConfig()),
            ("percentile", ImagingConfig(prefer_file_window=False)),
        ):
            grey = read_dicom_file(path, imaging).pixels.astype(float) / 255.0
            ring[name].append(grey[y - 1 : y + 2, x + 2 : x + 5].max())  # 2.9 pixels out
            body[name].append(grey[4:8, 44:52].mean())  # above the lungs, inside the body
    contrast = {name: np.subtract(ring[name], body[name]) for name in ring}
    assert contrast["file"].min() > 0.4, contrast
    assert np.ptp(body["file"]) < 0.05, body
    assert contrast["percentile"].min() < 0.15, contrast
    assert np.ptp(body["percentile"]) > 0.2, body
