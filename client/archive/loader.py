"""From a site's archive to samples: read the manifest, decode (or reuse) every image once,
and let each record's task check its coordinates and map them onto the 0-1000 grid.

A bad record or unreadable file is skipped with a :class:`Problem` naming the record, the file
and the reason; the loop goes on. Nothing in the archive is written or moved.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from client.archive.cache import CachedImage, PixelCache
from client.archive.decoded import Decoded, UnreadableImage
from client.archive.dicom import read_dicom_file
from client.archive.dicom_series import check_contained, read_series
from client.archive.image import read_image
from client.archive.manifest import ManifestRecord, Problem, RecordError, read_manifest
from client.archive.nifti import read_nifti
from client.archive.processing import resample_slices, to_canvas_pixels
from client.config import ImagingConfig, SiteConfig
from shared_model.sample import Geometry, Sample
from shared_model.tasks import FieldError, get_task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NIFTI_SUFFIXES = (".nii", ".nii.gz")

log = logging.getLogger(__name__)


@dataclass
class ArchiveReport:
    """What reading an archive gave: usable samples' counts and every problem."""

    records: int = 0
    usable: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # usable records, part left out
    decoded: int = 0
    cache_hits: int = 0
    images_2d: int = 0
    volumes_3d: int = 0
    patients: int = 0
    by_task: Counter = field(default_factory=Counter)
    by_lang: Counter = field(default_factory=Counter)
    by_modality: Counter = field(default_factory=Counter)
    by_split: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        """Plain data for ``--json``."""
        data = {k: v for k, v in vars(self).items() if not isinstance(v, (list, Counter))}
        data.update({k: dict(v) for k, v in vars(self).items() if isinstance(v, Counter)})
        data["problems"] = [asdict(p) for p in self.problems]
        data["warnings"] = [asdict(w) for w in self.warnings]
        return data


def decode(
    path: Path,
    imaging: ImagingConfig,
    modality: str | None,
    slices: int | None = None,
    archive: Path | None = None,
) -> Decoded:
    """Pick the reader by what ``path`` is: series folder, NIfTI, PNG/JPEG, or DICOM.

    With ``slices``, a series folder decodes only what resampling to ``slices`` needs. The
    files a series folder or DICOMDIR leads to must lie inside ``archive`` (by default, the
    folder they are found in).
    """
    name = path.name.lower()
    if path.is_dir():
        return read_series(path, imaging, slices, archive)
    if name.endswith(NIFTI_SUFFIXES):
        return read_nifti(path, imaging, modality)
    if name.endswith(IMAGE_SUFFIXES):
        return read_image(path, imaging)
    return read_dicom_file(path, imaging, archive)


def to_canvas(decoded: Decoded, canvas: int, slices: int) -> CachedImage:
    """Letterbox to the canvas (and resample a volume to ``slices``) as uint8, grey or RGB."""
    width, height, depth = decoded.size
    if decoded.is_volume:
        volume = resample_slices(decoded.pixels, slices)
        pixels = np.stack([to_canvas_pixels(s, canvas) for s in volume])
    else:
        pixels = to_canvas_pixels(decoded.pixels, canvas)
    geometry = Geometry(width, height, canvas, depth, decoded.spacing)
    return CachedImage(
        pixels, geometry.to_dict(), decoded.patient_id, decoded.modality, decoded.warnings
    )


class ArchiveReader:
    """Reads one site's archive through the pixel cache."""

    def __init__(self, config: SiteConfig, canvas: int, slices: int) -> None:
        self.config, self.canvas, self.slices = config, canvas, slices
        settings = {"canvas": canvas, "slices": slices, "imaging": asdict(config.imaging)}
        self.cache = PixelCache(config.cache_dir, settings)
        self._images: dict[str, CachedImage | UnreadableImage] = {}
        self.report = ArchiveReport()

    def image(self, relative: str, path: Path, modality: str | None) -> CachedImage:
        """The canvas-ready image of an archive path (decoded at most once per content)."""
        if relative not in self._images:
            self._keep(relative, self._load(path, modality))
        found = self._images[relative]
        if isinstance(found, UnreadableImage):
            raise found
        return found

    def prepare(self, records: Iterable[ManifestRecord], progress: bool = False) -> None:
        """Load every image ``records`` name, each once, on ``config.decode_workers`` threads
        (decoding, resizing and hashing release the GIL), in chunks of up to 32 so that a pass
        served from the cache does not pay a thread hand-off per image."""
        paths: dict[str, tuple[Path, str | None]] = {}
        for record in records:
            for relative, path in zip(record.images, record.paths, strict=True):
                if relative not in self._images:
                    paths.setdefault(relative, (path, record.modality))
        bar = tqdm(
            total=len(paths),
            desc=f"reading {self.config.name}",
            unit="image",
            disable=not progress,
        )
        names = list(paths)
        size = max(1, min(32, len(names) // (4 * self.config.decode_workers)))
        chunks = [names[start : start + size] for start in range(0, len(names), size)]
        with bar, ThreadPoolExecutor(self.config.decode_workers) as pool:
            loaded = pool.map(lambda chunk: [self._load(*paths[name]) for name in chunk], chunks)
            for chunk, images in zip(chunks, loaded, strict=True):
                for relative, image in zip(chunk, images, strict=True):
                    self._keep(relative, image)
                bar.update(len(chunk))

    def _load(self, path: Path, modality: str | None) -> tuple[CachedImage, bool] | UnreadableImage:
        """From the cache or decoded (and cached); the flag says whether it was decoded."""
        try:
            check_contained(path, self.config.archive)
            key = self.cache.key(path)
            cached = self.cache.get(key)
            if cached is not None:
                return cached, False
            decoded = decode(path, self.config.imaging, modality, self.slices, self.config.archive)
            cached = to_canvas(decoded, self.canvas, self.slices)
            self.cache.put(key, cached)
            return cached, True
        except UnreadableImage as error:
            return error
        except Exception as error:  # one bad file never stops the archive read
            log.exception("unexpected error reading %s", path)
            reason = f"unexpected error while reading ({type(error).__name__}: {error})"
            return UnreadableImage(str(path), reason)

    def _keep(self, relative: str, loaded: tuple[CachedImage, bool] | UnreadableImage) -> None:
        if isinstance(loaded, UnreadableImage):
            self._images[relative] = UnreadableImage(relative, loaded.reason)
            return
        image, decoded = loaded
        self._images[relative] = image
        if decoded:
            self.report.decoded += 1
        else:
            self.report.cache_hits += 1
        if image.pixels.ndim == 4:
            self.report.volumes_3d += 1
        else:
            self.report.images_2d += 1

    def sample(self, record: ManifestRecord) -> Sample:
        """Decode a record's images and build its sample; raises on any problem."""
        images = [
            self.image(relative, path, record.modality)
            for relative, path in zip(record.images, record.paths, strict=True)
        ]
        geometries = [Geometry.from_dict(image.geometry) for image in images]
        try:
            fields = get_task(record.task).to_grid(record.fields, geometries[0])
        except FieldError as error:
            raise RecordError(str(error)) from error
        patient = record.patient_id or images[0].patient_id
        if not patient:
            raise RecordError("no patient_id in the manifest and no DICOM Patient ID")
        return Sample(
            record_id=record.record_id,
            patient_id=patient,
            task=record.task,
            lang=record.lang,
            split=record.split,
            images=tuple(image.pixels for image in images),
            geometries=tuple(geometries),
            fields=fields,
            modality=record.modality or images[0].modality,
        )

    def read(
        self,
        splits: Iterable[str] | None = None,
        tasks: Iterable[str] | None = None,
        progress: bool = False,
    ) -> tuple[list[Sample], ArchiveReport]:
        """Every usable sample of the chosen splits and tasks, and the report."""
        records, problems = read_manifest(self.config.archive)
        self.report.problems.extend(problems)
        wanted = [
            r
            for r in records
            if (splits is None or r.split in set(splits))
            and (tasks is None or r.task in set(tasks))
        ]
        self.report.records = len(wanted) + len(problems)
        self.prepare(wanted, progress)
        samples = []
        for record in wanted:
            try:
                sample = self.sample(record)
            except UnreadableImage as error:
                self.report.problems.append(
                    Problem(record.record_id, record.line, error.path, error.reason)
                )
                continue
            except RecordError as error:
                file = record.images[0]
                self.report.problems.append(
                    Problem(record.record_id, record.line, file, str(error))
                )
                continue
            samples.append(sample)
            self._count(sample)
            self._warn(record)
        self.report.patients = len({s.patient_id for s in samples})
        self.cache.save_index()
        return samples, self.report

    def _warn(self, record: ManifestRecord) -> None:
        """A warning for each part of a usable record's images that decoding left out."""
        for relative in record.images:
            for warning in self._images[relative].warnings:
                self.report.warnings.append(
                    Problem(record.record_id, record.line, relative, warning)
                )

    def _count(self, sample: Sample) -> None:
        report = self.report
        report.usable += 1
        report.by_task[sample.task] += 1
        report.by_lang[sample.lang] += 1
        report.by_modality[sample.modality or "unknown"] += 1
        report.by_split[sample.split] += 1


def load_site_samples(
    config: SiteConfig,
    *,
    canvas: int,
    slices: int,
    splits: Iterable[str] | None = None,
    tasks: Iterable[str] | None = None,
    progress: bool = False,
) -> tuple[list[Sample], ArchiveReport]:
    """Read a site's archive into samples (see :class:`ArchiveReader`)."""
    return ArchiveReader(config, canvas, slices).read(splits, tasks, progress)
