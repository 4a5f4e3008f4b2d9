"""Public datasets converted into site archives (the manifest format), split across hospitals.

Each converter module exposes ``convert(source, limit) -> PublicDataset``; ``source`` is the
dataset's folder or file under the data root, laid out as its publishers release it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from client.archive.manifest import read_manifest

if TYPE_CHECKING:
    from simulations.datasets.archive import PublicDataset

SOURCES = {
    "vqa-rad": ("vqa_rad", "vqa_rad"),
    "pneumoniamnist": ("medmnist", "medmnist/pneumoniamnist.npz"),
    "adrenalmnist3d": ("medmnist", "medmnist/adrenalmnist3d_64.npz"),
    "slake": ("slake", "slake"),
    "iu-xray": ("iu_xray", "iu_xray"),
    "isbi2015": ("isbi2015", "isbi2015"),
}
"""Dataset name -> (converter module, source path relative to the data root)."""

PUBLIC_DATASETS = tuple(SOURCES)
PARTITIONS = ("iid", "dirichlet", "modality")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_data_root() -> Path:
    """``../shared/data`` from the current folder when it exists, else from the project root."""
    here = Path.cwd().parent / "shared" / "data"
    return here if here.is_dir() else PROJECT_ROOT.parent / "shared" / "data"


def convert(name: str, data_root: Path, limit: int | None = None) -> PublicDataset:
    """Convert dataset ``name`` found under ``data_root``; at most ``limit`` items per split."""
    module, relative = SOURCES[name]
    source = data_root / relative
    if not source.exists():
        raise FileNotFoundError(f"{name}: expected its public release at {source}")
    return importlib.import_module(f"simulations.datasets.{module}").convert(source, limit)


def public_stand_in(out_dir: Path, name: str) -> Path:
    """Where :func:`public_archives` writes the patients it sets apart as public."""
    return out_dir / f"{name}-public"


def patient_count(archive: Path) -> int:
    """How many patients ``archive``'s valid records belong to (a record without a patient
    counts as one)."""
    records, _ = read_manifest(archive)
    return len({record.patient_id or record.record_id for record in records})


def public_archives(
    name: str,
    out_dir: Path,
    *,
    data_root: Path | None = None,
    sites: int = 3,
    partition: str = "iid",
    limit: int | None = None,
    seed: int = 0,
    alpha: float = 0.5,
    val_fraction: float = 0.1,
    public_patients: int = 0,
) -> list[Path]:
    """Convert ``name`` and write one archive per virtual hospital under ``out_dir``.

    A dataset released without a val split gets one: ``val_fraction`` of its train patients.
    With ``public_patients``, that many train patients go to no hospital and are written to
    :func:`public_stand_in` instead, a public dataset of the same kind.
    """
    from simulations.datasets.partition import write_sites

    dataset = convert(name, data_root or default_data_root(), limit)
    if not dataset.split_counts()["val"]:
        dataset.hold_out_val(val_fraction, seed)
    if public_patients:
        dataset.split_off_public(public_patients, seed).write_archive(
            public_stand_in(out_dir, name)
        )
    return write_sites(dataset, out_dir, sites=sites, method=partition, seed=seed, alpha=alpha)
