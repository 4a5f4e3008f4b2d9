"""Write real DICOM and NIfTI files (pydicom, nibabel), deterministically.

Used by the synthetic hospitals, the public-dataset converters and the tests, so that every
archive FedUMIT simulates is read by the same ingestion code a hospital's archive is.
Volumes are given as ``(slices, rows, columns)`` in display orientation (columns towards the
patient's left, rows towards posterior, slices inferior to superior), the DICOM convention.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

SOP_CLASSES = {
    "CT": CTImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "DX": ComputedRadiographyImageStorage,
}


def stable_uid(*parts: object) -> str:
    """A DICOM UID derived from ``parts`` (the same parts give the same UID)."""
    entropy = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return generate_uid(entropy_srcs=[entropy])


def _dataset(patient_id: str, modality: str, rows: int, columns: int, uid_seed: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES.get(modality, CTImageStorage)
    meta.MediaStorageSOPInstanceUID = stable_uid(uid_seed, "sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.PatientID = patient_id
    dataset.PatientName = f"Synthetic^{patient_id}"
    dataset.Modality = modality
    dataset.StudyInstanceUID = stable_uid(patient_id, "study")
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    return dataset


def write_dicom_image(
    path: Path,
    stored: np.ndarray,
    *,
    patient_id: str,
    modality: str = "CR",
    spacing: tuple[float, float] = (0.5, 0.5),
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] = (1.0, 0.0),
    photometric: str = "MONOCHROME2",
) -> Path:
    """One 2D image; ``stored`` holds the stored values (uint16, or int16 for signed data)."""
    dataset = _dataset(patient_id, modality, *stored.shape, uid_seed=f"{path.name}|{patient_id}")
    dataset.PhotometricInterpretation = photometric
    dataset.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    dataset.PixelSpacing = [spacing[1], spacing[0]]
    dataset.RescaleSlope, dataset.RescaleIntercept = rescale
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.SeriesInstanceUID = stable_uid(path.name, patient_id, "series")
    dataset.PixelData = np.ascontiguousarray(stored).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def write_dicom_series(
    folder: Path,
    hounsfield: np.ndarray,
    *,
    patient_id: str,
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5),
    rescale: tuple[float, float] = (1.0, -1024.0),
    window: tuple[float, float] | None = (40.0, 400.0),
    file_order: Sequence[int] | None = None,
) -> Path:
    """A CT volume ``(slices, rows, columns)`` in HU as one file per slice in ``folder``.

    ``file_order`` permutes the file names (``slice-0000.dcm`` ...) so that reading must sort
    by geometry, not by name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    slope, intercept = rescale
    stored = np.rint((hounsfield - intercept) / slope).astype(np.int16)
    order = list(file_order) if file_order is not None else list(range(len(stored)))
    series_uid = stable_uid(folder.name, patient_id, "series")
    for index, values in enumerate(stored):
        dataset = _dataset(patient_id, "CT", *values.shape, uid_seed=f"{series_uid}|{index}")
        dataset.PixelRepresentation = 1
        dataset.SeriesInstanceUID = series_uid
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dataset.ImagePositionPatient = [0.0, 0.0, index * spacing[2]]
        dataset.PixelSpacing = [spacing[1], spacing[0]]
        dataset.SliceThickness = spacing[2]
        dataset.InstanceNumber = index + 1
        dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
        if window is not None:
            dataset.WindowCenter, dataset.WindowWidth = window
        dataset.PixelData = np.ascontiguousarray(values).tobytes()
        dataset.save_as(folder / f"slice-{order[index]:04d}.dcm", enforce_file_format=True)
    return folder


def write_nifti(
    path: Path, volume: np.ndarray, spacing: tuple[float, float, float] = (0.8, 0.8, 2.5)
) -> Path:
    """A volume ``(slices, rows, columns)`` as NIfTI with a RAS affine carrying the spacing."""
    data = np.flip(np.asarray(volume).transpose(2, 1, 0), axis=(0, 1))
    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data.astype(np.int16)), affine), path)
    return path
