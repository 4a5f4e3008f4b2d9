"""MedMNIST v2 (Yang et al. 2023): ``.npz`` splits as ``classification`` records.

2D images become PNG files, 3D volumes NIfTI files. MedMNIST releases no patient ids, so each
image is its own patient. AdrenalMNIST3D volumes are shape masks derived from CT, not
Hounsfield units, so their records carry no modality and the reader normalises them by
percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulations.datasets.archive import (
    FileWriter,
    PublicDataset,
    nifti_of_array,
    png_of_array,
)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Flavour:
    """How one MedMNIST dataset is phrased."""

    file: str
    question: str
    options: tuple[str, ...]
    captions: tuple[str, ...]
    modality: str | None
    volume: bool


FLAVOURS = {
    "pneumoniamnist": Flavour(
        "pneumoniamnist.npz",
        "What is the diagnosis of this chest X-ray?",
        ("normal", "pneumonia"),
        ("A chest X-ray with no sign of pneumonia.", "A chest X-ray showing pneumonia."),
        "CR",
        volume=False,
    ),
    "adrenalmnist3d": Flavour(
        "adrenalmnist3d_64.npz",
        "Does this adrenal gland CT show a normal gland or an adrenal mass?",
        ("normal", "adrenal mass"),
        ("The shape of a normal adrenal gland.", "The shape of an adrenal gland with a mass."),
        None,
        volume=True,
    ),
}


def convert(source: Path, limit: int | None = None) -> PublicDataset:
    """The dataset whose file ``source`` names, the first ``limit`` images of each split."""
    name = next(n for n, f in FLAVOURS.items() if f.file == source.name)
    flavour = FLAVOURS[name]
    dataset = PublicDataset(name)
    with np.load(source) as arrays:
        for split in SPLITS:
            labels, images = arrays[f"{split}_labels"], arrays[f"{split}_images"]
            for index in range(len(labels) if limit is None else min(limit, len(labels))):
                label = int(labels[index].ravel()[0])
                relative = f"images/{split}-{index:05d}.{'nii.gz' if flavour.volume else 'png'}"
                dataset.files[relative] = _writer(images[index], flavour)
                record = {
                    "id": f"{name}-{split}-{index:05d}",
                    "patient_id": f"{name}-{split}-{index:05d}",
                    "task": "classification",
                    "lang": "en",
                    "split": split,
                    "images": [relative],
                    "question": flavour.question,
                    "options": list(flavour.options),
                    "label": label,
                }
                if flavour.modality:
                    record["modality"] = flavour.modality
                dataset.add(record, flavour.options[label])
                dataset.add_caption(record, flavour.captions[label])
    return dataset


def _writer(pixels: np.ndarray, flavour: Flavour) -> FileWriter:
    if flavour.volume:
        return nifti_of_array(pixels, spacing=(1.0, 1.0, 1.0))
    return png_of_array(pixels)
