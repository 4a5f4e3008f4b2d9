"""DICOM files with pydicom 3: single frames, multi-frame objects, DICOMDIR.

Transforms, in order: Rescale Slope/Intercept (modality LUT), then the VOI transform (the
file's VOI LUT or window when present and preferred, else the site's CT window for CT, else a
percentile range), MONOCHROME1 inversion, and colour conversion (YBR and palette to RGB).
Compressed transfer syntaxes decode through pydicom's pixel-data plugins (pylibjpeg with its
openjpeg, libjpeg and rle plugins).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from client.archive.decoded import Decoded, UnreadableImage, check_size
from client.archive.processing import (
    integer_percentiles,
    percentile_normalise,
    stretch,
    to_uint8,
    window,
)
from client.config import ImagingConfig

DEFERRED_SIZE = "64 KB"  # elements this large are read from the file only when used


def read_dataset(
    path: Path, stop_before_pixels: bool = False, defer_pixels: bool = False
) -> pydicom.Dataset:
    """Parse a DICOM file, or raise :class:`UnreadableImage` saying what is wrong.

    With ``defer_pixels``, pixel data (and any other element over ``DEFERRED_SIZE``) stays in
    the file until it is used: a series reads every header but only the slices it needs.
    """
    defer_size = DEFERRED_SIZE if defer_pixels else None
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, defer_size=defer_size)
    except InvalidDicomError as error:
        forced = _read_without_preamble(path, stop_before_pixels)
        if forced is None:
            raise UnreadableImage(str(path), f"not a DICOM file ({error})") from error
        return forced
    except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
        raise UnreadableImage(str(path), f"truncated or damaged DICOM ({error})") from error


def _read_without_preamble(path: Path, stop_before_pixels: bool) -> pydicom.Dataset | None:
    """Old files without the 128-byte preamble and meta header, when they hold an image."""
    try:
        dataset = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
    except Exception:  # anything pydicom cannot parse even when forced is simply not DICOM
        return None
    if "Rows" not in dataset or "Columns" not in dataset:
        return None
    if "TransferSyntaxUID" not in dataset.file_meta:
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    return dataset


def frames(dataset: pydicom.Dataset, path: Path) -> np.ndarray:
    """Stored pixel values (RGB for colour), ``(H, W[, 3])`` or ``(F, H, W[, 3])``."""
    if "PixelData" not in dataset and "FloatPixelData" not in dataset:
        raise UnreadableImage(str(path), "no pixel data (a non-image object)")
    syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown")
    try:
        return dataset.pixel_array
    except NotImplementedError as error:
        raise UnreadableImage(
            str(path), f"unsupported transfer syntax {syntax} ({error})"
        ) from error
    except Exception as error:  # decoder plugins raise many types; each is a reason, not a crash
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if any(word in message.lower() for word in ("length", "truncat", "less than expected")):
            raise UnreadableImage(str(path), f"truncated pixel data ({message})") from error
        raise UnreadableImage(
            str(path), f"cannot decode pixel data ({syntax}: {message})"
        ) from error


def to_unit(
    stored: np.ndarray,
    dataset: pydicom.Dataset,
    imaging: ImagingConfig,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Modality LUT, VOI and photometric fixes: values in ``[0, 1]`` (RGB kept as RGB).

    ``reference`` is the image whose percentiles set a percentile range when ``stored`` holds
    something else (the table of every stored level in :func:`to_grey_uint8`).
    """
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(stored, dataset)
        return rgb.astype(np.float32) / float(
            np.iinfo(rgb.dtype).max if rgb.dtype.kind == "u" else 255
        )
    if stored.shape[-1:] == (3,) and int(dataset.get("SamplesPerPixel", 1)) == 3:
        return stored.astype(np.float32) / float(2 ** int(dataset.get("BitsStored", 8)) - 1)
    rescale = _rescale(dataset)
    if rescale is None:
        values = apply_modality_lut(stored, dataset).astype(np.float32)
    else:  # the common linear modality LUT, in float32 (a float64 copy costs more than it gives)
        values = stored.astype(np.float32) * np.float32(rescale[0]) + np.float32(rescale[1])
    unit = _voi(
        values, stored, dataset, imaging, rescale, stored if reference is None else reference
    )
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return unit


def to_grey_uint8(
    stored: np.ndarray, dataset: pydicom.Dataset, imaging: ImagingConfig
) -> np.ndarray | None:
    """A monochrome 8- or 16-bit image to uint8 through a table of every stored level.

    Exactly ``to_uint8(to_unit(stored, dataset, imaging))``, for one table lookup per pixel
    instead of a dozen float passes. ``None`` where no table applies: colour, float or 32-bit
    values, a Modality LUT Sequence, a VOI LUT Sequence in use, or a falling rescale.
    """
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    rescale = _rescale(dataset)
    uses_voi_lut = imaging.prefer_file_window and "VOILUTSequence" in dataset
    if (
        photometric not in ("MONOCHROME1", "MONOCHROME2")
        or stored.dtype.kind not in "iu"
        or stored.dtype.itemsize > 2
        or rescale is None
        or rescale[0] <= 0
        or uses_voi_lut
    ):
        return None
    unsigned = np.dtype(f"u{stored.dtype.itemsize}")
    levels = np.arange(np.iinfo(unsigned).max + 1, dtype=unsigned).view(stored.dtype)
    table = to_uint8(to_unit(levels, dataset, imaging, reference=stored))
    return np.take(table, stored.view(unsigned))


def _rescale(dataset: pydicom.Dataset) -> tuple[float, float] | None:
    """``(slope, intercept)`` when the modality LUT is Rescale Slope/Intercept (or nothing)."""
    if "ModalityLUTSequence" in dataset:
        return None
    slope, intercept = dataset.get("RescaleSlope", 1.0), dataset.get("RescaleIntercept", 0.0)
    return float(slope if slope is not None else 1.0), float(intercept or 0.0)


def _percentile_range(values, reference, rescale, imaging: ImagingConfig) -> np.ndarray:
    """The site's percentile range to ``[0, 1]``; for 8/16-bit stored values under a rising
    linear rescale, the percentiles come from a histogram of the ``reference`` stored values."""
    low, high = imaging.intensity_percentiles
    if (
        rescale is None
        or rescale[0] <= 0
        or reference.dtype.kind not in "iu"
        or reference.dtype.itemsize > 2
    ):
        return percentile_normalise(values, low, high)
    bottom, top = integer_percentiles(reference, (low, high)) * rescale[0] + rescale[1]
    return stretch(values, float(bottom), float(top))


def _voi(values, stored, dataset, imaging: ImagingConfig, rescale, reference) -> np.ndarray:
    has_window = "WindowCenter" in dataset and "WindowWidth" in dataset
    has_lut = "VOILUTSequence" in dataset
    if imaging.prefer_file_window and has_lut:
        out = apply_voi_lut(stored, dataset).astype(np.float32)
        return percentile_normalise(out, 0.0, 100.0)
    if imaging.prefer_file_window and has_window:
        centre, width = (_first(dataset.WindowCenter), _first(dataset.WindowWidth))
        if width > 0:
            return window(values, centre, width)
    if str(dataset.get("Modality", "")).upper() == "CT":
        return window(values, *imaging.ct_window)
    return _percentile_range(values, reference, rescale, imaging)


def _first(value) -> float:
    return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)


def pixel_spacing(dataset: pydicom.Dataset) -> tuple[float, float] | None:
    """``(x, y)`` millimetres per pixel from Pixel Spacing (or Imager Pixel Spacing)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in dataset and len(dataset.get(keyword)) == 2:
            row, column = (float(v) for v in dataset.get(keyword))
            return column, row
    return None


def declared_shape(dataset: pydicom.Dataset, path: Path) -> tuple[int, ...]:
    """``(columns, rows)``, or ``(columns, rows, frames)`` for a multi-frame object, as the
    header declares them (nothing is decoded)."""
    try:
        plane = (int(dataset.get("Columns", 0) or 0), int(dataset.get("Rows", 0) or 0))
        count = int(dataset.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as error:
        raise UnreadableImage(str(path), f"malformed image size in the header ({error})") from error
    return (*plane, count) if count > 1 else plane


def read_dicom_file(path: Path, imaging: ImagingConfig, archive: Path | None = None) -> Decoded:
    """One DICOM file: a 2D image, or a volume when it holds several frames.

    The pixel data stay in the file until the header's size has passed the site's caps. A
    DICOMDIR's references must lie inside ``archive`` (by default, the DICOMDIR's folder).
    """
    dataset = read_dataset(path, defer_pixels=True)
    if path.name.upper() == "DICOMDIR" or "DirectoryRecordSequence" in dataset:
        from client.archive.dicom_series import read_dicomdir

        return read_dicomdir(path, dataset, imaging, archive)
    shape = declared_shape(dataset, path)
    check_size(path, shape, imaging, "the DICOM header")
    stored = frames(dataset, path)
    multi = len(shape) > 2
    grey = None if multi else to_grey_uint8(stored, dataset, imaging)
    pixels = to_unit(stored, dataset, imaging) if grey is None else grey
    spacing = pixel_spacing(dataset)
    if multi and spacing is not None:
        between = dataset.get("SpacingBetweenSlices") or dataset.get("SliceThickness") or 1.0
        spacing = (*spacing, float(between))
    return Decoded(
        pixels=pixels,
        is_volume=multi,
        spacing=spacing,
        patient_id=str(dataset.get("PatientID", "")) or None,
        modality=str(dataset.get("Modality", "")) or None,
    )
