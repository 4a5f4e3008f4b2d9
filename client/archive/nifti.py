"""NIfTI volumes with nibabel: canonical orientation, scaling, spacing, 4D selection.

After ``as_closest_canonical`` (RAS+ axes) each axial slice is shown the way a DICOM axial
image is: column index towards the patient's left, row index towards posterior. Manifest
coordinates of a NIfTI volume use that grid: ``x`` column, ``y`` row, ``z`` slice (inferior to
superior), so a volume saved from a DICOM series keeps its coordinates.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from client.archive.decoded import Decoded, UnreadableImage, check_size
from client.archive.processing import percentile_normalise, window
from client.config import ImagingConfig


def read_nifti(path: Path, imaging: ImagingConfig, modality: str | None = None) -> Decoded:
    """A ``.nii``/``.nii.gz`` file as a volume of axial slices ``(D, H, W)``.

    The header's dims are checked against the site's size caps before the data are read.
    """
    try:
        header_only = nib.load(path)  # the data stay on disk until get_fdata
        check_size(path, header_only.shape, imaging, "the NIfTI header")
        image = nib.as_closest_canonical(header_only)
        data = np.asarray(image.get_fdata(dtype=np.float32))  # applies scl_slope/scl_inter
    except UnreadableImage:
        raise
    except (ImageFileError, OSError, EOFError, ValueError) as error:
        raise UnreadableImage(str(path), f"unreadable NIfTI ({error})") from error
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    if data.ndim == 4:
        index = imaging.nifti_volume_index
        if index >= data.shape[3]:
            raise UnreadableImage(
                str(path), f"4D NIfTI has {data.shape[3]} volumes; index {index} was configured"
            )
        data = data[..., index]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise UnreadableImage(str(path), f"expected a 3D or 4D volume, got shape {data.shape}")
    slices = np.flip(data, axis=(0, 1)).transpose(2, 1, 0)  # (z, row=posterior, col=left)
    if modality == "CT" or _looks_like_hounsfield(slices):
        unit = window(slices, *imaging.ct_window)
    else:
        unit = percentile_normalise(slices, *imaging.intensity_percentiles)
    return Decoded(unit, is_volume=True, spacing=(zooms[0], zooms[1], zooms[2]), modality=modality)


def _looks_like_hounsfield(values: np.ndarray) -> bool:
    """Air near -1000 HU and a range of a few thousand: a CT in Hounsfield units."""
    low, high = np.percentile(values, [1, 99])
    return low < -500 and high - low > 500
