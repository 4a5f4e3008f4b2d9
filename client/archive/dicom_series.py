"""DICOM series given as a folder, and DICOMDIR: slices sorted along the slice normal.

Every file a folder holds and every file a DICOMDIR references must lie inside the archive,
by the manifest's own rule (:func:`~client.archive.manifest.resolve_inside`): no absolute
path, no ``..``, no link leading out.

Slices are ordered by Image Position Patient projected on the normal of Image Orientation
Patient (falling back to Instance Number), and the slice spacing is the median distance
between neighbours. Geometry read from decimal strings is compared with tolerances, since
scanners write the same value with different precision from slice to slice. A folder mixing
series is refused; one mixing planes (orientation, matrix size or pixel spacing: a localizer
among the slices) keeps its largest stack of slices sharing one plane and says, as a warning,
which files it left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from client.archive.decoded import Decoded, UnreadableImage, check_size
from client.archive.dicom import frames, pixel_spacing, read_dataset, to_unit
from client.archive.manifest import RecordError, resolve_inside
from client.archive.processing import resample_weights
from client.config import ImagingConfig

# Direction cosines equal within 1e-4 (dcm2niix's tolerance): strings written with 4 to 16
# decimals differ by 5e-5 at most, while even a 0.1 degree tilt moves a cosine by 1.7e-3.
ORIENTATION_TOLERANCE = 1e-4
# Pixel spacings equal within 1e-4 relative: rounding "0.48828125" to "0.488281" is 5e-7,
# a different reconstruction field of view differs by a percent or more.
SPACING_TOLERANCE = 1e-4
# Slice positions closer than 0.01 mm are the same location: decimal strings carry 2 to 6
# decimals (rounding errors up to 0.005 mm), and no scanner spaces slices 10 um apart.
POSITION_TOLERANCE = 0.01
NAMES_IN_WARNING = 5

Slice = tuple[pydicom.Dataset, Path]


def read_series(
    folder: Path, imaging: ImagingConfig, slices: int | None = None, archive: Path | None = None
) -> Decoded:
    """Every DICOM file of ``folder`` as one volume (see :func:`series_files`).

    With ``slices``, the volume comes back resampled to ``slices`` (as
    :func:`~client.archive.processing.resample_slices` does) and only the slices that
    resampling reads are decoded: every header is still read and checked, but a 500-slice
    series converts 16 slices to pixels instead of 500.
    """
    files = series_files(folder, archive)
    if not files:
        raise UnreadableImage(str(folder), "empty series folder")
    return _volume_from_files(folder, files, imaging, slices)


def read_dicomdir(
    path: Path, dataset: pydicom.Dataset, imaging: ImagingConfig, archive: Path | None = None
) -> Decoded:
    """The images a DICOMDIR references: its first series as a volume (or single image)."""
    first = dicomdir_files(path, dataset, archive)
    if len(first) == 1:
        from client.archive.dicom import read_dicom_file

        return read_dicom_file(first[0], imaging, archive)
    return _volume_from_files(path, first, imaging)


def check_contained(path: Path, archive: Path) -> None:
    """Refuse a series folder or DICOMDIR that leads out of ``archive``, before the pixel
    cache is asked: the cache keys content, and the same content reached through a link out
    of the archive would otherwise be served from another folder's entry."""
    if path.is_dir():
        series_files(path, archive)
    elif path.name.upper() == "DICOMDIR":
        dicomdir_files(path, read_dataset(path, stop_before_pixels=True), archive)


def series_files(folder: Path, archive: Path | None = None) -> list[Path]:
    """The files of a series folder (hidden ones ignored), once every link in the folder,
    hidden or not (the cache hashes them all), is found to lead inside ``archive`` (by
    default, the folder itself)."""
    root = folder if archive is None else archive
    entries = sorted(folder.iterdir())
    for link in (p for p in entries if p.is_symlink()):
        _contained(root, link.relative_to(root), "series member")
    return [p for p in entries if p.is_file() and not p.name.startswith(".")]


def dicomdir_files(path: Path, dataset: pydicom.Dataset, archive: Path | None = None) -> list[Path]:
    """The files of a DICOMDIR's first series, each found inside ``archive`` (by default,
    the DICOMDIR's folder, which its references are relative to)."""
    root = path.parent if archive is None else archive
    series: dict[str, list[Path]] = {}
    current = ""
    for record in dataset.DirectoryRecordSequence:
        kind = str(record.get("DirectoryRecordType", ""))
        if kind == "SERIES":
            current = str(record.get("SeriesInstanceUID", len(series)))
        elif kind == "IMAGE" and "ReferencedFileID" in record:
            parts = record.ReferencedFileID
            parts = [parts] if isinstance(parts, str) else list(parts)
            series.setdefault(current, []).append(path.parent.relative_to(root).joinpath(*parts))
    if not series:
        raise UnreadableImage(str(path), "DICOMDIR references no image")
    return [_contained(root, file, "DICOMDIR reference") for file in next(iter(series.values()))]


def _contained(root: Path, relative: Path, what: str) -> Path:
    """``root / relative``, refused as unreadable unless it exists inside ``root``."""
    try:
        return resolve_inside(root, str(relative), what)
    except RecordError as error:
        raise UnreadableImage(str(root / relative), str(error)) from error


def _volume_from_files(
    label: Path, files: list[Path], imaging: ImagingConfig, slices: int | None = None
) -> Decoded:
    datasets = [(read_dataset(f, defer_pixels=slices is not None), f) for f in files]
    _check_one_series(label, datasets)
    stack, warnings = _largest_stack(label, datasets)
    check_size(label, (*_plane_size(stack[0][0]), len(stack)), imaging, "the series")
    normal = _normal(stack[0][0])
    ordered = sorted(stack, key=lambda item: _position(item[0], normal))

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
    z = _slice_spacing([d for d, _ in ordered], normal)
    return Decoded(
        pixels=pixels,
        is_volume=True,
        spacing=(*spacing, z) if spacing is not None else None,
        patient_id=str(first.get("PatientID", "")) or None,
        modality=str(first.get("Modality", "")) or None,
        source_depth=len(ordered) if slices is not None else None,
        warnings=warnings,
    )


def _check_one_series(label: Path, datasets: list[Slice]) -> None:
    """A folder holding two series is refused: which one the manifest means is unknown."""
    values = {str(d.get("SeriesInstanceUID")) for d, _ in datasets}
    if len(values) > 1:
        raise UnreadableImage(
            str(label), f"inconsistent series: {len(values)} different SeriesInstanceUID values"
        )


def _largest_stack(label: Path, datasets: list[Slice]) -> tuple[list[Slice], tuple[str, ...]]:
    """The slices sharing the plane of the largest group, and a warning naming the others.

    Refused when two groups tie for largest: nothing tells which one is the series.
    """
    stacks: list[list[Slice]] = []
    for item in datasets:
        home = next((s for s in stacks if not _plane_differences(s[0][0], item[0])), None)
        if home is None:
            stacks.append([item])
        else:
            home.append(item)
    if len(stacks) == 1:
        return stacks[0], ()
    stacks.sort(key=len, reverse=True)
    kept, dropped = stacks[0], [item for stack in stacks[1:] for item in stack]
    differing = sorted(
        {name for dataset, _ in dropped for name in _plane_differences(kept[0][0], dataset)}
    )
    if len(stacks[1]) == len(kept):
        raise UnreadableImage(
            str(label),
            f"inconsistent series: {len(stacks)} stacks of slices with different "
            f"{' / '.join(differing)}, the largest two of {len(kept)} slices each",
        )
    names = sorted(file.name for _, file in dropped)
    listed = ", ".join(names[:NAMES_IN_WARNING])
    if len(names) > NAMES_IN_WARNING:
        listed += f" and {len(names) - NAMES_IN_WARNING} more"
    warning = (
        f"mixed series: kept the largest stack of {len(kept)} slices, left out {len(dropped)} "
        f"with a different {' / '.join(differing)} ({listed})"
    )
    return kept, (warning,)


def _plane_differences(a: pydicom.Dataset, b: pydicom.Dataset) -> list[str]:
    """The attributes, among those a stack's slices share, in which two slices differ."""
    same = {
        "ImageOrientationPatient": _close(
            a, b, "ImageOrientationPatient", 0.0, ORIENTATION_TOLERANCE
        ),
        "Rows x Columns": _plane_size(a) == _plane_size(b),
        "PixelSpacing": _close(a, b, "PixelSpacing", SPACING_TOLERANCE, 0.0),
    }
    return [name for name, equal in same.items() if not equal]


def _plane_size(dataset: pydicom.Dataset) -> tuple[int, int]:
    return int(dataset.get("Columns", 0) or 0), int(dataset.get("Rows", 0) or 0)


def _close(a: pydicom.Dataset, b: pydicom.Dataset, keyword: str, rtol: float, atol: float) -> bool:
    """Whether both slices lack ``keyword``, or hold as many numbers, equal within tolerance."""
    x, y = _numbers(a, keyword), _numbers(b, keyword)
    if x is None or y is None:
        return x is None and y is None
    return x.shape == y.shape and bool(np.allclose(x, y, rtol=rtol, atol=atol))


def _numbers(dataset: pydicom.Dataset, keyword: str) -> np.ndarray | None:
    """A decimal-string attribute as floats; ``None`` when absent or empty."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    try:
        return np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError) as error:
        raise UnreadableImage(
            str(dataset.filename), f"malformed {keyword} {value!r} ({error})"
        ) from error


def _normal(dataset: pydicom.Dataset) -> np.ndarray | None:
    orientation = _numbers(dataset, "ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return None
    return np.cross(orientation[:3], orientation[3:])


def _position(dataset: pydicom.Dataset, normal: np.ndarray | None) -> tuple[float, float]:
    """Sort key: distance along the stack's slice normal, then Instance Number."""
    position = _numbers(dataset, "ImagePositionPatient")
    instance = float(dataset.get("InstanceNumber", 0) or 0)
    if normal is None or position is None or len(position) != 3:
        return instance, instance
    return float(np.dot(normal, position)), instance


def _slice_spacing(ordered: list[pydicom.Dataset], normal: np.ndarray | None) -> float:
    """The median gap between neighbouring slice positions (gaps within tolerance ignored)."""
    positions = [_position(d, normal)[0] for d in ordered]
    gaps = np.abs(np.diff(positions))
    gaps = gaps[gaps > POSITION_TOLERANCE]
    if gaps.size:
        return float(np.median(gaps))
    return float(ordered[0].get("SpacingBetweenSlices") or ordered[0].get("SliceThickness") or 1.0)
