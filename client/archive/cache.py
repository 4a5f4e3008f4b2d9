"""Preprocessed-pixel cache in the site's work folder (never in the archive).

An entry holds one image file's canvas-sized uint8 pixels and its geometry, keyed by the file's
content (SHA-256 of its bytes; of every file for a series folder) and the preprocessing
settings, so a changed file or setting misses and nothing stale is ever used. Entries are
written atomically; an entry that fails to load is rebuilt, not trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE_VERSION = "2"


@dataclass(frozen=True)
class CachedImage:
    """One image file ready for the model."""

    pixels: np.ndarray  # (canvas, canvas, 3) or (slices, canvas, canvas, 3) uint8
    geometry: dict[str, Any]
    patient_id: str | None
    modality: str | None


def content_digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (names and bytes, sorted)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class PixelCache:
    """Content-addressed store of :class:`CachedImage` entries under ``folder``."""

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.folder = folder
        self._settings = json.dumps({"version": CACHE_VERSION, **settings}, sort_keys=True)

    def key(self, path: Path) -> str:
        """Entry key of ``path`` under the current settings."""
        return hashlib.sha256(f"{self._settings}|{content_digest(path)}".encode()).hexdigest()

    def get(self, key: str) -> CachedImage | None:
        """The entry, or ``None`` when absent or unreadable (it will be rebuilt)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                return CachedImage(
                    data["pixels"], meta["geometry"], meta["patient_id"], meta["modality"]
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            return None

    def put(self, key: str, image: CachedImage) -> None:
        """Write an entry atomically (temporary file, fsync, rename)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps(
            {"geometry": image.geometry, "patient_id": image.patient_id, "modality": image.modality}
        )
        temporary = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        with temporary.open("wb") as handle:
            np.savez(handle, pixels=image.pixels, meta=np.asarray(meta))
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"
