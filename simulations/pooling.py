"""Pool several site archives into one, for the centralized baseline of ``fedumit compare``."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

MANIFEST = "manifest.jsonl"


def pool_archives(archives: Sequence[Path], out: Path) -> Path:
    """One archive in ``out`` holding every record and image of ``archives``.

    Each archive's files go under a folder of its name (hard links where the file system allows,
    copies otherwise; never symlinks, which the archive reader refuses); record ids, patient ids
    and image paths get that folder as a prefix, so nothing collides and every patient stays one
    privacy unit.
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    lines = []
    for archive in archives:
        name = archive.name
        shutil.copytree(archive, out / name, copy_function=_link_or_copy)
        (out / name / MANIFEST).unlink()
        for line in (archive / MANIFEST).read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines.append(json.dumps(_prefixed(json.loads(line), name), ensure_ascii=False))
    (out / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _prefixed(record: dict, name: str) -> dict:
    record = dict(record)
    record["id"] = f"{name}/{record['id']}"
    record["patient_id"] = f"{name}/{record['patient_id']}"
    record["images"] = [f"{name}/{image}" for image in record["images"]]
    return record


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
