"""The synthetic hospitals are the same bytes however many processes write them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from simulations.experiment import write_hospitals
from simulations.synthetic import consortium_profiles, generate_consortium


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
