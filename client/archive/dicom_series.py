"""DICOM series given as a folder, and DICOMDIR: slices sorted along the slice normal.

Slices are ordered by Image Position Patient projected on the normal of Image Orientation
Patient (falling back to Instance Number), and the slice spacing is the median distance
between neighbours. A folder mixing series, orientations or matrix sizes is refused as an
inconsistent series.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from client.archive.decoded import Decoded, UnreadableImage
from client.archive.dicom import frames, pixel_spacing, read_dataset, to_unit
from client.archive.processing import resample_weights
from client.config import ImagingConfig


def read_series(folder: Path, imaging: ImagingConfig, slices: int | None = None) -> Decoded:
    """Every DICOM file of ``folder`` as one volume (hidden files ignored).

    With ``slices``, the volume comes back resampled to ``slices`` (as
    :func:`~client.archive.processing.resample_slices` does) and only the slices that
    resampling reads are decoded: every header is still read and checked, but a 500-slice
    series converts 16 slices to pixels instead of 500.
    """
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UnreadableImage(str(folder), "empty series folder")
    return _volume_from_files(folder, files, imaging, slices)


def read_dicomdir(path: Path, dataset: pydicom.Dataset, imaging: ImagingConfig) -> Decoded:
    """The images a DICOMDIR references: its first series as a volume (or single image)."""
    series: dict[str, list[Path]] = {}
    current = ""
    for record in dataset.DirectoryRecordSequence:
        kind = str(record.get("DirectoryRecordType", ""))
        if kind == "SERIES":
            current = str(record.get("SeriesInstanceUID", len(series)))
        elif kind == "IMAGE" and "ReferencedFileID" in record:
            parts = record.ReferencedFileID
            parts = [parts] if isinstance(parts, str) else list(parts)
            series.setdefault(current, []).append(path.parent.joinpath(*parts))
    if not series:
        raise UnreadableImage(str(path), "DICOMDIR references no image")
    first = next(iter(series.values()))
    if len(first) == 1:
        from client.archive.dicom import read_dicom_file

        return read_dicom_file(first[0], imaging)
    return _volume_from_files(path, first, imaging)


def _volume_from_files(
    label: Path, files: list[Path], imaging: ImagingConfig, slices: int | None = None
) -> Decoded:
    datasets = [(read_dataset(f, defer_pixels=slices is not None), f) for f in files]
    _check_consistent(label, [d for d, _ in datasets])
    ordered = sorted(datasets, key=lambda item: _position(item[0]))

    def unit(index: int) -> np.ndarray:
        dataset, file = ordered[index]
        return to_unit(frames(dataset, file), dataset, imaging).astype(np.float32, copy=False)

    if slices is None:
        pixels = np.stack([unit(i) for i in range(len(ordered))])
    else:
        below, above, weight = resample_weights(len(ordered), slices)
        needed = {i: unit(i) for i in sorted({*below, *above})}
        pixels = np.stack(
            [
                needed[b] * (1.0 - w) + needed[a] * w
                for b, a, w in zip(below, above, weight, strict=True)
            ]
        )
    first = ordered[0][0]
    spacing = pixel_spacing(first)
    z = _slice_spacing([d for d, _ in ordered])
    return Decoded(
        pixels=pixels,
        is_volume=True,
        spacing=(*spacing, z) if spacing is not None else None,
        patient_id=str(first.get("PatientID", "")) or None,
        modality=str(first.get("Modality", "")) or None,
        source_depth=len(ordered) if slices is not None else None,
    )


def _check_consistent(label: Path, datasets: list[pydicom.Dataset]) -> None:
    for keyword in ("SeriesInstanceUID", "Rows", "Columns", "ImageOrientationPatient"):
        values = {str(d.get(keyword)) for d in datasets}
        if len(values) > 1:
            raise UnreadableImage(
                str(label), f"inconsistent series: {len(values)} different {keyword} values"
            )


def _normal(dataset: pydicom.Dataset) -> np.ndarray | None:
    orientation = dataset.get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return None
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return np.cross(row, column)


def _position(dataset: pydicom.Dataset) -> tuple[float, float]:
    """Sort key: distance along the slice normal, then Instance Number."""
    normal, position = _normal(dataset), dataset.get("ImagePositionPatient")
    instance = float(dataset.get("InstanceNumber", 0) or 0)
    if normal is None or position is None:
        return instance, instance
    return float(np.dot(normal, np.asarray(position, float))), instance


def _slice_spacing(ordered: list[pydicom.Dataset]) -> float:
    positions = [_position(d)[0] for d in ordered]
    gaps = np.abs(np.diff(positions))
    gaps = gaps[gaps > 0]
    if gaps.size:
        return float(np.median(gaps))
    return float(ordered[0].get("SpacingBetweenSlices") or ordered[0].get("SliceThickness") or 1.0)
