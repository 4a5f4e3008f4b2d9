"""Small real archives for ingestion tests, written with pydicom and nibabel."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from simulations.imaging_writers import write_dicom_image, write_dicom_series, write_nifti

SPACING = (0.7, 0.7, 2.0)


def ct_volume(slices: int = 6, size: int = 40) -> np.ndarray:
    """HU volume whose slice ``k`` has mean value ``-200 + 50 k`` and a bright 6x6 block."""
    volume = np.zeros((slices, size, size), dtype=np.float32)
    for k in range(slices):
        volume[k] = -200 + 50 * k
    volume[:, 10:16, 24:30] = 300
    return volume


def write_manifest(archive: Path, records: list[dict], extra_lines: list[str] = ()) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in records] + list(extra_lines)
    (archive / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def xray(size: tuple[int, int] = (60, 80)) -> np.ndarray:
    """Stored uint16 values of a 2D image with a bright block at rows 20-30, columns 50-60."""
    image = np.full(size, 1000, dtype=np.uint16)
    image[20:30, 50:60] = 3000
    return image


def site_toml(root: Path, archive: Path, name: str = "hospital-test") -> Path:
    path = root / f"{name}.toml"
    path.write_text(
        f'[site]\nname = "{name}"\narchive = "{archive}"\nwork_dir = "{root / "work"}"\n',
        encoding="utf-8",
    )
    return path


def good_archive(archive: Path) -> list[dict]:
    """Two patients: a CR image (DICOM), a CT series folder, the same CT as NIfTI, a PNG."""
    write_dicom_image(
        archive / "p1" / "cr.dcm", xray(), patient_id="P1", modality="CR", window=(2000.0, 4000.0)
    )
    write_dicom_series(
        archive / "p2" / "ct",
        ct_volume(),
        patient_id="P2",
        spacing=SPACING,
        file_order=[3, 0, 5, 1, 4, 2],
    )
    write_nifti(archive / "p2" / "ct.nii.gz", ct_volume(), spacing=SPACING)
    Image.fromarray(np.full((32, 32), 128, dtype=np.uint8)).save(archive / "p1" / "photo.png")
    records = [
        {
            "id": "cr-det",
            "patient_id": "P1",
            "task": "detection",
            "lang": "en",
            "split": "train",
            "images": ["p1/cr.dcm"],
            "modality": "CR",
            "target": "nodule",
            "boxes": [[50, 20, 60, 30]],
        },
        {
            "id": "cr-vqa",
            "patient_id": "P1",
            "task": "vqa",
            "lang": "zh",
            "split": "val",
            "images": ["p1/cr.dcm"],
            "question": "有结节吗？",
            "answer": "是",
            "options": ["是", "否"],
        },
        {
            "id": "ct-lm",
            "task": "landmark",
            "lang": "en",
            "split": "train",
            "images": ["p2/ct"],
            "landmark": "block",
            "point": [27, 13, 3],
        },
        {
            "id": "nii-cls",
            "patient_id": "P2",
            "task": "classification",
            "lang": "en",
            "split": "test",
            "images": ["p2/ct.nii.gz"],
            "modality": "CT",
            "question": "Is there a block?",
            "options": ["no", "yes"],
            "label": 1,
        },
        {
            "id": "png-cap",
            "patient_id": "P1",
            "task": "caption",
            "lang": "en",
            "split": "train",
            "images": ["p1/photo.png"],
            "text": "a grey square",
        },
    ]
    write_manifest(archive, records)
    return records


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (plus symlink targets)."""
    result = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            result[key] = "link:" + str(path.readlink())
        elif path.is_file():
            result[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result
