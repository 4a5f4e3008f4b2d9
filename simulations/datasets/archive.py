"""A converted public dataset, held in memory until it is written as site archives.

Converters return :class:`PublicDataset`: manifest records whose image paths are relative to
an archive, and for each path a writer that produces the file (a copy, a PNG, a NIfTI). Images
are only written for the patients a site receives, and never into the source dataset. Every
image also gets an English ``caption`` record built from the dataset's own labels and metadata,
so that stage 1 (``align``) has data at every site.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from client.archive.manifest import MANIFEST
from simulations.imaging_writers import write_nifti

FileWriter = Callable[[Path], object]
"""Writes one archive file to the path it is given."""

UNKNOWN = "unknown"
MODALITY_TEXT = {"CT": "a CT image", "MR": "an MRI image", "CR": "an X-ray", "US": "an ultrasound"}


@dataclass
class PublicDataset:
    """Manifest records, the files they name, and a label per patient for partitioning."""

    name: str
    records: list[dict] = field(default_factory=list)
    files: dict[str, FileWriter] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def add(self, record: dict, label: str) -> None:
        """Append a record; ``label`` is its patient's label (the first one given wins)."""
        self.records.append(record)
        self.labels.setdefault(record["patient_id"], label)

    def add_caption(self, record: dict, text: str) -> None:
        """A ``caption`` record (stage-1 data) of ``record``'s image, patient and split.

        The patient must already have a record (its label is reused).
        """
        keep = ("patient_id", "split", "images", "modality")
        caption = {key: record[key] for key in keep if key in record}
        caption.update(id=f"caption-{record['images'][0]}", task="caption", lang="en", text=text)
        self.add(caption, self.labels[record["patient_id"]])

    def patients(self) -> list[str]:
        """Patient ids in first-seen order."""
        return list(dict.fromkeys(r["patient_id"] for r in self.records))

    def modalities(self) -> dict[str, str]:
        """Each patient's most frequent record modality (``unknown`` when none is given)."""
        counts: dict[str, Counter] = {}
        for record in self.records:
            counts.setdefault(record["patient_id"], Counter())[record.get("modality", UNKNOWN)] += 1
        return {patient: counter.most_common(1)[0][0] for patient, counter in counts.items()}

    def split_counts(self) -> Counter:
        """Records per split."""
        return Counter(r["split"] for r in self.records)

    def hold_out_val(self, fraction: float, seed: int = 0) -> None:
        """Move the train records of a seeded ``fraction`` of patients to val (test stays test).

        For datasets released without a val split (VQA-RAD, ISBI 2015), so that per-round
        evaluation never has to look at test.
        """
        rng = np.random.default_rng(seed)
        training = sorted({r["patient_id"] for r in self.records if r["split"] == "train"})
        chosen = set(rng.permutation(training)[: round(fraction * len(training))].tolist())
        for record in self.records:
            if record["split"] == "train" and record["patient_id"] in chosen:
                record["split"] = "val"

    def split_off_public(self, count: int, seed: int = 0) -> PublicDataset:
        """Move a seeded ``count`` of the train patients (none with val or test records), at
        most a quarter of them, out of the hospitals' share into a dataset of their own: records
        that stand in for a public dataset of the same kind, used for their images only."""
        training = sorted(
            {r["patient_id"] for r in self.records if r["split"] == "train"}
            - {r["patient_id"] for r in self.records if r["split"] != "train"}
        )
        count = min(count, len(training) // 4)
        if count < 1:
            raise ValueError(f"{self.name}: {len(training)} train patients, none to set apart")
        chosen = set(np.random.default_rng(seed).permutation(training)[:count].tolist())
        public = PublicDataset(f"{self.name}-public", files=self.files)
        for record in self.records:
            if record["patient_id"] in chosen:
                public.add(record, self.labels[record["patient_id"]])
        self.records = [r for r in self.records if r["patient_id"] not in chosen]
        return public

    def write_archive(self, folder: Path, patients: Iterable[str] | None = None) -> Path:
        """Write the images and ``manifest.jsonl`` of ``patients`` (default: all) to ``folder``."""
        wanted = set(self.patients() if patients is None else patients)
        records = [r for r in self.records if r["patient_id"] in wanted]
        folder.mkdir(parents=True, exist_ok=True)
        for relative in dict.fromkeys(path for r in records for path in r["images"]):
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            self.files[relative](target)
        lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in records]
        (folder / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return folder


def copy_of(source: Path) -> FileWriter:
    """Copy ``source`` unchanged."""
    return partial(shutil.copyfile, source)


def png_of_array(pixels: np.ndarray) -> FileWriter:
    """Save a uint8 greyscale or RGB array as PNG."""
    return lambda target: Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(target)


def png_of_file(source: Path) -> FileWriter:
    """Re-encode an image file Pillow reads (BMP, TIFF, ...) as PNG."""

    def write(target: Path) -> None:
        with Image.open(source) as image:
            image.save(target, format="PNG")

    return write


def nifti_of_array(volume: np.ndarray, spacing: tuple[float, float, float]) -> FileWriter:
    """Save a ``(slices, rows, columns)`` volume as NIfTI with ``spacing`` in mm."""
    return lambda target: write_nifti(target, volume, spacing=spacing)


def yes_no_options(answer: str, lang: str) -> list[str] | None:
    """``[yes, no]`` in the record's language when the answer is one of them, else None."""
    options = {"en": ["yes", "no"], "zh": ["是", "否"]}[lang]
    return options if answer in options else None


def describe(modality: str | None, region: str) -> str:
    """``An MRI image of the head.``: a caption from the modality and the body region."""
    text = f"{MODALITY_TEXT.get(modality or '', 'a radiology image')} of the {region}."
    return text[0].upper() + text[1:]
