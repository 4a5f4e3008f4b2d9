"""``manifest.jsonl``: parse and validate every record; a bad record is a problem, not a stop.

Checks: valid JSON object, unique ``id``, known task, language and split, the task's required
fields with the right types, ``options``/``label`` consistency, box and point shapes, and
image paths that stay inside the archive (no absolute paths, no ``..``, no symlink leading
out) and exist. Box and point bounds need the image size and are checked after decoding
(:func:`check_geometry`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_model.sample import LANGUAGES, SPLITS
from shared_model.tasks import TASK_NAMES

MANIFEST = "manifest.jsonl"
TEXT_FIELDS = {
    "caption": ("text",),
    "compare": ("text",),
    "vqa": ("question", "answer"),
    "classification": ("question",),
    "report": ("report",),
    "detection": ("target",),
    "landmark": ("landmark",),
}


@dataclass(frozen=True)
class Problem:
    """Why a record (or a file) cannot be used; as a report's warning, what of a usable
    record's image was left out."""

    record_id: str
    line: int
    file: str
    reason: str

    @property
    def kind(self) -> str:
        """The reason without its specifics, for grouping in reports."""
        return self.reason.split(":")[0].split(" (")[0]


@dataclass(frozen=True)
class ManifestRecord:
    """A structurally valid manifest record."""

    line: int
    record_id: str
    patient_id: str | None
    task: str
    lang: str
    split: str
    images: tuple[str, ...]
    modality: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    paths: tuple[Path, ...] = ()  # the image files, checked to lie inside the archive


class RecordError(ValueError):
    """A record's field holds an invalid value."""


def read_manifest(archive: Path) -> tuple[list[ManifestRecord], list[Problem]]:
    """Every valid record of ``archive/manifest.jsonl`` and a problem for each invalid one."""
    path = archive / MANIFEST
    if not path.is_file():
        return [], [Problem("-", 0, MANIFEST, "manifest.jsonl is missing from the archive")]
    records, problems, seen = [], [], set()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            record_id = "-"
            try:
                data = json.loads(raw.decode("utf-8"))
                if not isinstance(data, dict):
                    raise RecordError("a line must hold a JSON object")
                record_id = str(data.get("id", "-"))
                record = parse_record(data, number, archive)
                if record.record_id in seen:
                    raise RecordError(f"duplicate id {record.record_id!r}")
                seen.add(record.record_id)
                records.append(record)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                problems.append(Problem(record_id, number, MANIFEST, f"invalid JSON ({error})"))
            except RecordError as error:
                problems.append(Problem(record_id, number, MANIFEST, str(error)))
    return records, problems


def parse_record(data: Mapping[str, Any], line: int, archive: Path) -> ManifestRecord:
    """Validate one record; raise :class:`RecordError` naming the field and value."""
    record_id = _string(data, "id")
    task = _string(data, "task")
    if task not in TASK_NAMES:
        raise RecordError(f"unknown task {task!r}: known tasks are {list(TASK_NAMES)}")
    lang = _string(data, "lang")
    if lang not in LANGUAGES:
        raise RecordError(f"unknown language {lang!r}: use one of {list(LANGUAGES)}")
    split = _string(data, "split")
    if split not in SPLITS:
        raise RecordError(f"unknown split {split!r}: use one of {list(SPLITS)}")
    images = data.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        raise RecordError("field 'images' must be a non-empty list of paths")
    expected_images = 2 if task == "compare" else 1
    if len(images) != expected_images:
        raise RecordError(f"task {task} needs {expected_images} image(s), got {len(images)}")
    paths = tuple(resolve_inside(archive, image) for image in images)
    fields = {
        k: v
        for k, v in data.items()
        if k not in ("id", "patient_id", "task", "lang", "split", "images", "modality")
    }
    _check_task_fields(task, fields)
    patient = data.get("patient_id")
    return ManifestRecord(
        line=line,
        record_id=record_id,
        patient_id=str(patient) if patient not in (None, "") else None,
        task=task,
        lang=lang,
        split=split,
        images=tuple(images),
        modality=str(data["modality"]).upper() if data.get("modality") else None,
        fields=fields,
        paths=paths,
    )


@functools.lru_cache(maxsize=64)
def _resolved(archive: Path) -> Path:
    """The archive folder with links resolved (asked once per image otherwise)."""
    return archive.resolve()


def resolve_inside(archive: Path, relative: str, what: str = "image") -> Path:
    """The file ``relative`` names, refused unless it exists inside ``archive``.

    The one containment rule for every path the archive gives: manifest images, and the
    members of a series folder and the references of a DICOMDIR (``what`` names which).
    """
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise RecordError(f"{what} path {relative!r} escapes the archive (absolute or '..')")
    path = archive / candidate
    root = _resolved(archive)
    if not path.resolve().is_relative_to(root):
        raise RecordError(f"{what} path {relative!r} is a link leading out of the archive")
    if not path.exists():
        raise RecordError(f"{what} {relative!r} does not exist in the archive")
    return path


def _string(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"field {key!r} must be a non-empty string, got {value!r}")
    return value


def _check_task_fields(task: str, fields: Mapping[str, Any]) -> None:
    for key in TEXT_FIELDS[task]:
        _string(fields, key)
    options = fields.get("options")
    if options is not None and (
        not isinstance(options, list)
        or len(options) < 2
        or not all(isinstance(o, str) and o.strip() for o in options)
    ):
        raise RecordError(f"field 'options' must list at least two strings, got {options!r}")
    if task == "vqa" and options is not None and fields["answer"] not in options:
        raise RecordError(f"answer {fields['answer']!r} is not one of the options {options}")
    if task == "classification":
        if options is None:
            raise RecordError("field 'options' is required for classification")
        label = fields.get("label")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(options):
            raise RecordError(f"label {label!r} is not an index into {len(options)} options")
    if task == "detection":
        boxes = fields.get("boxes")
        if not isinstance(boxes, list):
            raise RecordError(f"field 'boxes' must be a list of boxes, got {boxes!r}")
        for box in boxes:
            _check_box(box)
    if task == "landmark":
        point = fields.get("point")
        if not _numbers(point) or len(point) not in (2, 3):
            raise RecordError(f"field 'point' must be [x, y] or [x, y, z], got {point!r}")


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )


def _check_box(box: Any) -> None:
    if not _numbers(box) or len(box) not in (4, 6):
        raise RecordError(f"a box must be 4 or 6 numbers, got {box!r}")
    half = len(box) // 2
    if any(box[i] >= box[i + half] for i in range(half)):
        raise RecordError(f"box {box} has a corner not below and right of the other")


def check_geometry(record: ManifestRecord, size: tuple[int, int, int | None]) -> None:
    """Boxes and points must lie inside the decoded image: ``size`` is (width, height, depth)."""
    width, height, depth = size
    limits = (width, height) if depth is None else (width, height, depth)
    shapes = [record.fields["point"]] if record.task == "landmark" else []
    if record.task == "detection":
        shapes = [b[: len(b) // 2] for b in record.fields["boxes"]]
        shapes += [b[len(b) // 2 :] for b in record.fields["boxes"]]
    for point in shapes:
        if len(point) != len(limits):
            raise RecordError(
                f"{len(point)}D coordinates {point} given for a {'volume' if depth else '2D image'}"
            )
        if any(not 0 <= value <= limit for value, limit in zip(point, limits, strict=True)):
            raise RecordError(f"coordinates {point} lie outside the image of size {limits}")
