"""Hospital archive ingestion: DICOM (files, series, multi-frame, DICOMDIR), NIfTI and PNG/JPEG
into model-ready samples, with manifest validation, a preprocessing cache and a site check."""

from client.archive.decoded import Decoded, UnreadableImage
from client.archive.loader import ArchiveReader, ArchiveReport, decode, load_site_samples
from client.archive.manifest import MANIFEST, ManifestRecord, Problem, read_manifest

__all__ = [
    "MANIFEST",
    "ArchiveReader",
    "ArchiveReport",
    "Decoded",
    "ManifestRecord",
    "Problem",
    "UnreadableImage",
    "decode",
    "load_site_samples",
    "read_manifest",
]
