"""``manifest.jsonl``: parse and validate every record; a bad record is a problem, not a stop.

Checks: valid JSON object, unique ``id``, known task, language and split, the task's own
fields (:meth:`shared_model.tasks.Task.validate`: required text, ``options``/``label``
consistency, box and point shapes), the task's number of images, and image paths that stay
inside the archive (no absolute paths, no ``..``, no symlink leading out) and exist. Box and
point bounds need the image size and are checked after decoding, when the task maps them onto
the grid (:meth:`shared_model.tasks.Task.to_grid`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_model.sample import LANGUAGES, SPLITS
from shared_model.tasks import TASK_NAMES, FieldError, get_task

MANIFEST = "manifest.jsonl"


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
    kind = get_task(task)
    lang = _string(data, "lang")
    if lang not in LANGUAGES:
        raise RecordError(f"unknown language {lang!r}: use one of {list(LANGUAGES)}")
    split = _string(data, "split")
    if split not in SPLITS:
        raise RecordError(f"unknown split {split!r}: use one of {list(SPLITS)}")
    images = data.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        raise RecordError("field 'images' must be a non-empty list of paths")
    expected_images = kind.images
    if len(images) != expected_images:
        raise RecordError(f"task {task} needs {expected_images} image(s), got {len(images)}")
    paths = tuple(resolve_inside(archive, image) for image in images)
    fields = {
        k: v
        for k, v in data.items()
        if k not in ("id", "patient_id", "task", "lang", "split", "images", "modality")
    }
    try:
        kind.validate(fields)
    except FieldError as error:
        raise RecordError(str(error)) from error
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
