"""``fedumit infer``: ask an exported model about one image, or answer a whole archive manifest.

Images are read exactly as sites read them (:mod:`client.archive`: DICOM files and series
folders, NIfTI, PNG/JPEG, letterboxed to the export's canvas), so a model meets the same pixels
at inference as in training. Boxes and points come back in source pixels (voxels for a volume).
This module sits in the command layer because it joins the client's readers with the exported
model; ``server`` and ``client`` still never import each other.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from client.archive import ArchiveReader, decode
from client.archive.loader import to_canvas
from client.archive.manifest import MANIFEST
from client.config import ImagingConfig, SiteConfig
from shared_model.evaluation import answer_samples, score_predictions
from shared_model.export import read_export_info
from shared_model.inference import Answer, Answerer, Question, load_answerer
from shared_model.sample import Geometry, Sample
from shared_model.tasks import get_task

log = logging.getLogger(__name__)


class QuestionError(ValueError):
    """A question or manifest that cannot be asked as given."""


def load_export(directory: Path, device: str = "auto") -> tuple[Answerer, dict[str, Any]]:
    """An :class:`Answerer` over an export directory (plain transformers), and its export info."""
    info = read_export_info(directory)
    return load_answerer(directory, int(info["canvas"]), device), info


def answer_image(
    answerer: Answerer,
    paths: Sequence[Path],
    task: str,
    lang: str,
    *,
    canvas: int,
    slices: int,
    question: str | None = None,
    options: Sequence[str] | None = None,
    target: str | None = None,
    modality: str | None = None,
) -> dict[str, Any]:
    """Ask one question about image files; the answer text and its readings in source units.

    ``target`` names the finding to box (detection) or the landmark to point at.
    """
    given = {"question": question, "options": list(options or []), "target": target}
    kind = get_task(task)
    missing = kind.missing(given)
    if missing:
        raise QuestionError(f"task {task} needs " + ", ".join(f"--{key}" for key in missing))
    images = [read_for_model(path, canvas, slices, modality) for path in paths]
    geometry = images[0][1]
    fields = kind.question_fields(given, geometry)
    (answer,) = answerer.answer([Question(tuple(p for p, _ in images), task, lang, fields)])
    return {"task": task, "lang": lang, **readings(task, answer, fields, geometry)}


def read_for_model(
    path: Path, canvas: int, slices: int, modality: str | None = None
) -> tuple[np.ndarray, Geometry]:
    """Canvas-ready uint8 pixels of an image file or series folder, and how they were fitted."""
    cached = to_canvas(decode(path, ImagingConfig(), modality), canvas, slices)
    return cached.pixels, Geometry.from_dict(cached.geometry)


def readings(
    task: str, answer: Answer, fields: Mapping[str, Any], geometry: Geometry
) -> dict[str, Any]:
    """The answer text, whether it is well-formed, and its strict (``parsed``) and lenient
    readings for people: coordinates in source units, options by name."""
    kind = get_task(task)
    return {
        "answer": answer.text,
        "well_formed": answer.reading.well_formed,
        "parsed": kind.to_source(answer.reading.strict, fields, geometry),
        "lenient": kind.to_source(answer.reading.lenient, fields, geometry),
    }


def answer_manifest(
    answerer: Answerer,
    manifest: Path,
    out: Path,
    canvas: int,
    slices: int,
    split: str | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Answer every usable record; write one prediction a line and the metrics beside it.

    Returns the metrics (``<task>/<lang>/<metric>``), also written to ``<out stem>-metrics.json``.
    """
    archive = manifest.parent if manifest.name == MANIFEST else manifest
    if not (archive / MANIFEST).is_file():
        raise QuestionError(f"{manifest}: expected an archive folder or its {MANIFEST}")
    with tempfile.TemporaryDirectory(prefix="fedumit-infer-") as work:
        config = SiteConfig(
            path=archive / MANIFEST, name=archive.name, archive=archive, work_dir=Path(work)
        )
        samples, report = ArchiveReader(config, canvas, slices).read(
            splits=[split] if split else None, progress=True
        )
    for problem in report.problems:
        log.warning(
            "skipped record %s (line %d, %s): %s",
            problem.record_id,
            problem.line,
            problem.file,
            problem.reason,
        )
    answers = answer_samples(answerer, samples, batch_size=batch_size, progress=True)
    metrics = score_predictions(samples, [answer.reading for answer in answers])
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for sample, answer in zip(samples, answers, strict=True):
            handle.write(json.dumps(prediction(sample, answer), ensure_ascii=False) + "\n")
    metrics_path = out.with_name(out.stem + "-metrics.json")
    metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(samples)} predictions in {out}, metrics in {metrics_path}", file=sys.stderr)
    return metrics


def prediction(sample: Sample, answer: Answer) -> dict[str, Any]:
    """One line of ``predictions.jsonl``: the answer, its readings and the reference, in source
    units."""
    task = get_task(sample.task)
    geometry = sample.geometries[0]
    reference = task.reference(sample.fields)
    return {
        "id": sample.record_id,
        "task": sample.task,
        "lang": sample.lang,
        "split": sample.split,
        **readings(sample.task, answer, sample.fields, geometry),
        "reference": task.to_source(reference, sample.fields, geometry),
    }
