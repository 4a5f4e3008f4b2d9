"""Preprocessed-pixel cache in the site's work folder (never in the archive).

An entry holds one image file's canvas-sized uint8 pixels and its geometry, keyed by the file's
content (SHA-256 of its bytes; of every file's name and digest for a series folder) and the
preprocessing settings, so a changed file or setting misses and nothing stale is ever used.

A stat index (path, size, mtime, ctime, inode -> SHA-256) spares re-hashing unchanged files:
a file whose stat differs is hashed again, and so is one modified less than ``RACY_NS`` before
it was hashed (a second change within the filesystem's timestamp tick would not show in its
stat). Entries and the index are written to a temporary file and renamed, without fsync: an
entry holds its length and CRC-32, and one that fails either check is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE_VERSION = "3"
INDEX_NAME = "content-index.json"
RACY_NS = 2_000_000_000  # coarsest common timestamp tick (FAT); ext3 and HFS+ have 1 s
_ENTRY_SUFFIX = ".pixels"
# magic, header length, pixel bytes, CRC-32 of header and pixels; then the JSON header, pixels
_PREFIX = struct.Struct("<8sIQI")
_MAGIC = b"FUMITPX3"


@dataclass(frozen=True)
class CachedImage:
    """One image file ready for the model."""

    pixels: np.ndarray  # (canvas, canvas, 3) or (slices, canvas, canvas, 3) uint8
    geometry: dict[str, Any]
    patient_id: str | None
    modality: str | None


class ContentDigests:
    """SHA-256 of files and series folders, through a stat index saved in ``index``."""

    def __init__(self, index: Path) -> None:
        self.index = index
        self.hashed = 0  # files read and hashed (not found unchanged in the index)
        self._known = _read_index(index)
        self._dirty = False

    def digest(self, path: Path) -> str:
        """Of a file, or of a folder's files (relative names and digests, sorted)."""
        if not path.is_dir():
            return self._file(path)
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path)}\0{self._file(file)}\n".encode())
        return digest.hexdigest()

    def save(self) -> None:
        """Write the index if it changed (atomically; a lost update only costs re-hashing)."""
        if self._dirty:
            data = json.dumps({"version": CACHE_VERSION, "files": self._known}).encode()
            write_atomically(self.index, [data])
            self._dirty = False

    def _file(self, path: Path) -> str:
        checked = time.time_ns()
        stat = path.stat()
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        name = str(path)
        known = self._known.get(name)
        if known is not None and known[:-1] == signature:
            return known[-1]
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        self.hashed += 1
        if checked - stat.st_mtime_ns > RACY_NS:
            self._known[name] = [*signature, digest]
            self._dirty = True
        return digest


class PixelCache:
    """Content-addressed store of :class:`CachedImage` entries under ``folder``."""

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.folder = folder
        self.digests = ContentDigests(folder / INDEX_NAME)
        self._settings = json.dumps({"version": CACHE_VERSION, **settings}, sort_keys=True)

    def key(self, path: Path) -> str:
        """Entry key of ``path`` under the current settings."""
        content = self.digests.digest(path)
        return hashlib.sha256(f"{self._settings}|{content}".encode()).hexdigest()

    def get(self, key: str) -> CachedImage | None:
        """The entry, or ``None`` when absent, torn or corrupt (it will be rebuilt)."""
        try:
            with self._path(key).open("rb", buffering=0) as handle:
                data = np.empty(os.fstat(handle.fileno()).st_size, np.uint8)
                if handle.readinto(data) != len(data):
                    return None
        except OSError:
            return None
        return _parse_entry(data)

    def put(self, key: str, image: CachedImage) -> None:
        """Write an entry atomically (temporary file, rename) with its length and CRC-32."""
        pixels = np.ascontiguousarray(image.pixels)
        header = json.dumps(
            {
                "dtype": pixels.dtype.str,
                "shape": pixels.shape,
                "geometry": image.geometry,
                "patient_id": image.patient_id,
                "modality": image.modality,
            }
        ).encode()
        body = memoryview(pixels).cast("B")
        checksum = zlib.crc32(body, zlib.crc32(header))
        prefix = _PREFIX.pack(_MAGIC, len(header), len(body), checksum)
        write_atomically(self._path(key), [prefix, header, body])

    def save_index(self) -> None:
        """Keep this pass's file digests for the next one."""
        self.digests.save()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}{_ENTRY_SUFFIX}"


def write_atomically(path: Path, chunks: Iterable[bytes | memoryview]) -> None:
    """Write ``chunks`` to a temporary file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.writelines(chunks)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _parse_entry(data: np.ndarray) -> CachedImage | None:
    """An entry's image, or ``None`` unless its magic, lengths and CRC-32 all check out."""
    if len(data) < _PREFIX.size:
        return None
    magic, header_length, body_length, checksum = _PREFIX.unpack_from(data)
    start = _PREFIX.size + header_length
    if magic != _MAGIC or len(data) != start + body_length:
        return None
    if zlib.crc32(data[_PREFIX.size :]) != checksum:
        return None
    try:
        header = json.loads(data[_PREFIX.size : start].tobytes())
        return CachedImage(
            data[start:].view(np.dtype(header["dtype"])).reshape(header["shape"]),
            header["geometry"],
            header["patient_id"],
            header["modality"],
        )
    except (ValueError, KeyError, TypeError):
        return None


def _read_index(index: Path) -> dict[str, list]:
    """The saved stat index, or an empty one when absent, stale or unreadable."""
    try:
        data = json.loads(index.read_bytes())
        if data["version"] != CACHE_VERSION:
            return {}
        return {
            name: entry
            for name, entry in data["files"].items()
            if isinstance(entry, list) and len(entry) == 5 and isinstance(entry[-1], str)
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
