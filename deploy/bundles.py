"""Flower app bundles (FABs) read as data: digest, identity, files, and what changed.

Nothing here imports, unpacks to disk or runs a bundle's code: a FAB is a zip archive with the
app's ``pyproject.toml`` and a ``.info/CONTENT`` manifest (path, SHA-256, size of every file),
read from memory.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import tomllib
import zipfile
from dataclasses import dataclass
from functools import cached_property

MANIFEST = ".info/CONTENT"
PROJECT_FILE = "pyproject.toml"
MAX_DIFF_LINES = 200  # of one changed text file, in the approval's report


class BundleError(ValueError):
    """The bytes are not a readable Flower app bundle."""


def sha256_hex(content: bytes) -> str:
    """SHA-256 of ``content`` (hex), the digest a site approves."""
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class Bundle:
    """One FAB's bytes."""

    content: bytes

    @cached_property
    def sha256(self) -> str:
        """The bundle's SHA-256 (hex)."""
        return sha256_hex(self.content)

    @cached_property
    def files(self) -> dict[str, str]:
        """Path -> SHA-256 of every file, as the bundle's manifest lists them."""
        listed = {}
        for line in self._read(MANIFEST).decode("utf-8").splitlines():
            path, digest, _ = line.rsplit(",", 2)
            listed[path] = digest
        return listed

    @cached_property
    def project(self) -> dict:
        """The bundle's ``pyproject.toml``."""
        try:
            return tomllib.loads(self._read(PROJECT_FILE).decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise BundleError(f"{PROJECT_FILE} of the bundle does not parse: {error}") from None

    @property
    def name(self) -> str:
        """``publisher/name`` as Flower identifies the app."""
        publisher = self.project.get("tool", {}).get("flwr", {}).get("app", {}).get("publisher")
        return f"{publisher}/{self.project.get('project', {}).get('name')}"

    @property
    def version(self) -> str:
        """The app's version from its ``pyproject.toml``."""
        return str(self.project.get("project", {}).get("version", "?"))

    def identity(self) -> tuple[str, str]:
        """(name, version), or what is wrong, for a bundle that may not be readable."""
        try:
            return self.name, self.version
        except BundleError as error:
            return f"unreadable: {error}", ""

    def text(self, path: str) -> str | None:
        """A file's text, or None for a file that is not UTF-8 text."""
        try:
            return self._read(path).decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _read(self, path: str) -> bytes:
        try:
            with zipfile.ZipFile(io.BytesIO(self.content)) as archive:
                return archive.read(path)
        except zipfile.BadZipFile:
            raise BundleError("not a Flower app bundle (not a zip archive)") from None
        except KeyError:
            raise BundleError(f"not a Flower app bundle (no {path})") from None


@dataclass(frozen=True)
class Changes:
    """What differs between an earlier bundle and a later one."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    diff: list[str]  # unified diff lines of the changed text files

    def describe(self) -> str:
        """The changes as a report a person reads."""
        if not (self.added or self.removed or self.changed):
            return "no file changed"
        lines = [
            f"{len(self.changed)} changed, {len(self.added)} added, {len(self.removed)} removed"
        ]
        lines += [f"  + {path}" for path in self.added]
        lines += [f"  - {path}" for path in self.removed]
        lines += [f"  ~ {path}" for path in self.changed]
        return "\n".join(lines + self.diff)


def changes(before: Bundle, after: Bundle) -> Changes:
    """The files added, removed and changed from ``before`` to ``after``, with their diff."""
    old, new = before.files, after.files
    changed = sorted(p for p in old.keys() & new.keys() if old[p] != new[p])
    diff: list[str] = []
    for path in changed:
        a, b = before.text(path), after.text(path)
        if a is None or b is None:
            diff.append(f"binary file {path} differs")
            continue
        lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), path, path, lineterm=""))
        if len(lines) > MAX_DIFF_LINES:
            lines = [*lines[:MAX_DIFF_LINES], f"... {len(lines) - MAX_DIFF_LINES} more lines"]
        diff += lines
    return Changes(sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys()), changed, diff)
