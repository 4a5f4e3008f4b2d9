"""ISBI 2015 cephalometric challenge (Wang et al. 2016): 19 landmarks per lateral cephalogram.

The release holds ``RawImage/{TrainingData,Test1Data,Test2Data}/<nnn>.bmp`` (images 1-150,
151-300, 301-400) and ``AnnotationsByMD/400_senior`` and ``400_junior`` with ``<nnn>.txt``:
19 lines ``x,y`` in pixels, then the challenge's classification lines. A landmark's point is
the mean of the two doctors (the senior's alone when the junior's file is missing). Images are
re-encoded as PNG; Test1 and Test2 are test splits.
"""

from __future__ import annotations

from pathlib import Path

from simulations.datasets.archive import PublicDataset, png_of_file

FOLDERS = {"TrainingData": "train", "Test1Data": "test", "Test2Data": "test"}
LANDMARKS = (
    "sella",
    "nasion",
    "orbitale",
    "porion",
    "subspinale",
    "supramentale",
    "pogonion",
    "menton",
    "gnathion",
    "gonion",
    "lower incisal incision",
    "upper incisal incision",
    "upper lip",
    "lower lip",
    "subnasale",
    "soft tissue pogonion",
    "posterior nasal spine",
    "anterior nasal spine",
    "articulare",
)
DOCTORS = ("400_senior", "400_junior")


def convert(source: Path, limit: int | None = None) -> PublicDataset:
    """Every cephalogram (or the first ``limit`` of each folder), one record per landmark."""
    dataset = PublicDataset("isbi2015")
    for folder, split in FOLDERS.items():
        for image in sorted((source / "RawImage" / folder).glob("*.bmp"))[:limit]:
            relative = f"images/{image.stem}.png"
            dataset.files[relative] = png_of_file(image)
            base = {
                "patient_id": f"isbi-{image.stem}",
                "split": split,
                "images": [relative],
                "modality": "CR",
            }
            points = landmarks(source, image.stem)
            for name, point in zip(LANDMARKS, points, strict=True):
                record = {
                    **base,
                    "id": f"isbi-{image.stem}-{name.replace(' ', '-')}",
                    "task": "landmark",
                    "lang": "en",
                    "landmark": name,
                    "point": point,
                }
                dataset.add(record, "cephalogram")
            dataset.add_caption(base, "A lateral cephalometric radiograph of the head.")
    return dataset


def landmarks(source: Path, stem: str) -> list[list[float]]:
    """The 19 points of image ``stem``, averaged over the doctors whose file exists."""
    readings = [
        _read(path)
        for path in (source / "AnnotationsByMD" / doctor / f"{stem}.txt" for doctor in DOCTORS)
        if path.is_file()
    ]
    if not readings:
        raise FileNotFoundError(f"no landmark annotations for ISBI image {stem}")
    return [
        [round(sum(axis) / len(readings), 1) for axis in zip(*points, strict=True)]
        for points in zip(*readings, strict=True)
    ]


def _read(path: Path) -> list[tuple[float, float]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(float(x), float(y)) for x, y in (line.split(",") for line in lines[: len(LANDMARKS)])]
