"""The frozen stage-1 adapters a site has received, kept in its work folder by SHA-256.

The server sends the frozen global ``align`` adapter once per site and run, then only announces
its hash (``stage1-hash``); the site answers from this store. A file's name is the hash its
arrays must have, and a file is read only after its arrays hash to its name, so a damaged or
replaced file is never used: it is deleted and the site refuses with ``stage1-missing``, which
makes the server send the adapter again. Files land by a rename, so a crash leaves none half
written; a verified file is read once per process until its size or time changes.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from protocol import arrays_sha256

log = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class Stage1Store:
    """Stage-1 adapters by the SHA-256 of their arrays (:func:`protocol.arrays_sha256`).

    Parameters
    ----------
    directory:
        Where the adapters live (one ``<sha256>.npz`` each); created on first write.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._verified: tuple[str, tuple[int, int, int], OrderedDict[str, np.ndarray]] | None = None

    def path(self, sha256: str) -> Path:
        """The file of the adapter whose arrays hash to ``sha256`` (64 hex digits)."""
        if not SHA256_HEX.match(sha256):
            raise ValueError(f"not a SHA-256 in hex: {sha256!r}")
        return self.directory / f"{sha256}.npz"

    def put(self, arrays: Mapping[str, np.ndarray], sha256: str) -> None:
        """Keep ``arrays``, which must hash to ``sha256`` (else ``ValueError``, nothing kept)."""
        path = self.path(sha256)
        if arrays_sha256(arrays) != sha256:
            raise ValueError("stage-1 arrays do not hash to the name they were given")
        if self.get(sha256) is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        with partial.open("wb") as handle:
            np.savez(handle, **arrays)
        partial.replace(path)

    def get(self, sha256: str) -> OrderedDict[str, np.ndarray] | None:
        """The adapter whose arrays hash to ``sha256``, or ``None`` when it is not here (a file
        whose arrays do not hash to its name is deleted)."""
        path = self.path(sha256)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._verified is not None and self._verified[:2] == (sha256, stamp):
            return self._verified[2]
        arrays = _read(path)
        if arrays is None or arrays_sha256(arrays) != sha256:
            log.warning("deleting %s: its arrays do not hash to its name", path)
            path.unlink(missing_ok=True)
            return None
        self._verified = (sha256, stamp, arrays)
        return arrays


def _read(path: Path) -> OrderedDict[str, np.ndarray] | None:
    """Arrays of an ``.npz`` in their stored order; ``None`` when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return OrderedDict((name, stored[name]) for name in stored.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        log.warning("cannot read %s: %s", path, error)
        return None
