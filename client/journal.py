"""Append-only, hash-chained JSON-lines files that a site can trust after a crash or an edit.

A site keeps two such files in its work folder: the privacy ledger and the audit log. Each line
is one JSON object with its position ``seq`` (0 for the first line) and ``prev``, the SHA-256 of
the previous line's bytes, so changing, removing or reordering a line breaks the chain. Removing
lines from the end keeps the chain intact, so every append also rewrites a small *head* file
beside the journal (``<name>.head``: the last ``seq`` and the hash of its line, written by
temporary file, fsync and rename); a journal shorter than its head says was truncated.

Appends happen under an exclusive inter-process lock (``<name>.lock``) and are fsync'ed before
:meth:`Journal.append` returns. A crash can leave (a) a last line without its newline, which
:meth:`Journal.records` reports as torn until :meth:`Journal.drop_torn_tail` removes it (a line
that was never completely written was never acted on: callers write before they act), or (b) one
complete line more than the head names, which is accepted and the head brought up to date.

The journal does not try to stop a site's own administrator, who owns the disk; it makes
accidental resets, restores from an old backup and hand edits visible, and stops the site until a
person looks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

GENESIS_PREV = "0" * 64


class JournalError(Exception):
    """A journal cannot be trusted as it is on disk; the message says where and why."""


class MissingJournalError(JournalError):
    """The journal was never created here, or its file is gone."""


class TornJournalError(JournalError):
    """The last line is incomplete: the site stopped while writing it."""


def canonical_line(record: Mapping[str, Any]) -> bytes:
    """The bytes a record is stored as (sorted keys, no spaces, UTF-8), without the newline."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def line_hash(line: bytes) -> str:
    """SHA-256 of one stored line (hex)."""
    return hashlib.sha256(line).hexdigest()


class Journal:
    """One hash-chained journal file and its head anchor.

    Parameters
    ----------
    path:
        The journal file; the head and lock files live beside it.
    what:
        How errors name the journal (``"privacy ledger"``, ``"audit log"``).
    """

    def __init__(self, path: str | Path, what: str = "journal") -> None:
        self.path = Path(path)
        self.what = what
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def exists(self) -> bool:
        """Whether the journal or its head is on disk (a created journal has both)."""
        return self.path.exists() or self.head_path.exists()

    def create(self, first: Mapping[str, Any]) -> dict[str, Any]:
        """Write the journal's first line; refuses when a journal or head is already there."""
        with self._lock():
            if self.exists():
                raise JournalError(f"{self.path}: the {self.what} already exists")
            return Session(self, [], GENESIS_PREV).append(first)

    def records(self) -> list[dict[str, Any]]:
        """Every record, verified (chain, sequence, head); raises :class:`JournalError`."""
        return self._verified(self._read_lines())[0]

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """Hold the inter-process lock over a read of the verified records and any appends:
        what a caller decides from the records still holds when it appends."""
        with self._lock():
            records, last_hash = self._verified(self._read_lines())
            yield Session(self, records, last_hash)

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Append one record in a session of its own."""
        with self.session() as session:
            return session.append(record)

    def drop_torn_tail(self) -> bytes:
        """Remove an incomplete last line and return its bytes (empty when there was none)."""
        with self._lock():
            data = self.path.read_bytes() if self.path.is_file() else b""
            end = data.rfind(b"\n") + 1
            torn = data[end:]
            if torn:
                with self.path.open("r+b") as handle:
                    handle.truncate(end)
                    handle.flush()
                    os.fsync(handle.fileno())
            return torn

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write_line(self, line: bytes, seq: int) -> None:
        created = not self.path.exists()
        with self.path.open("ab") as handle:
            handle.write(line + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            fsync_directory(self.path.parent)
        self._write_head(seq, line_hash(line))

    def _write_head(self, seq: int, digest: str) -> None:
        temporary = self.head_path.with_name(self.head_path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps({"seq": seq, "hash": digest}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.head_path)
        fsync_directory(self.head_path.parent)

    def _read_lines(self) -> list[bytes]:
        if not self.path.is_file():
            if self.head_path.is_file():
                raise MissingJournalError(
                    f"{self.path}: the {self.what} is missing but its head "
                    f"{self.head_path.name} is present: it was deleted or moved"
                )
            raise MissingJournalError(f"{self.path}: no {self.what} here")
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        if lines[-1]:
            raise TornJournalError(
                f"{self.path}: line {len(lines)} of the {self.what} is incomplete "
                f"(the site stopped while writing it)"
            )
        return lines[:-1]

    def _verified(self, lines: list[bytes]) -> tuple[list[dict[str, Any]], str]:
        records: list[dict[str, Any]] = []
        prev = GENESIS_PREV
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise self._damaged(number, f"not JSON ({error.__class__.__name__})") from error
            if not isinstance(record, dict) or record.get("seq") != number - 1:
                raise self._damaged(number, "out of sequence")
            if record.get("prev") != prev:
                raise self._damaged(
                    number, f"it does not follow line {number - 1} (one of the two was edited)"
                )
            if canonical_line(record) != line:
                raise self._damaged(number, "edited (not in the form the site wrote)")
            prev = line_hash(line)
            records.append(record)
        self._check_head(records, prev)
        return records, prev

    def _check_head(self, records: list[dict[str, Any]], last_hash: str) -> None:
        if not self.head_path.is_file():
            raise JournalError(
                f"{self.head_path}: the {self.what}'s head is missing, so truncation could not "
                f"be detected"
            )
        try:
            head = json.loads(self.head_path.read_text(encoding="utf-8"))
            seq, digest = int(head["seq"]), str(head["hash"])
        except (ValueError, KeyError, TypeError) as error:
            raise JournalError(f"{self.head_path}: unreadable ({error})") from error
        last = len(records) - 1
        if seq > last:
            raise JournalError(
                f"{self.path}: the {self.what} ends at line {last + 1} but its head names line "
                f"{seq + 1}: lines were removed (truncated, or restored from an older copy)"
            )
        if seq < last - 1:
            raise JournalError(
                f"{self.path}: {last - seq} lines after the head's line {seq + 1}: lines were "
                f"added by someone other than FedUMIT"
            )
        expected = last_hash if seq == last else line_hash(canonical_line(records[seq]))
        if digest != expected:
            raise JournalError(f"{self.path}: line {seq + 1} differs from the one its head names")

    def _damaged(self, number: int, reason: str) -> JournalError:
        return JournalError(f"{self.path}: line {number} of the {self.what} is damaged: {reason}")


class Session:
    """A journal's verified records while its lock is held; appends extend them."""

    def __init__(self, journal: Journal, records: list[dict[str, Any]], last_hash: str) -> None:
        self.journal, self.records, self._last_hash = journal, records, last_hash

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Append ``record`` (``seq`` and ``prev`` added); durable when this returns."""
        reserved = {"seq", "prev"} & set(record)
        if reserved:
            raise ValueError(f"records must not carry {sorted(reserved)}: the journal sets them")
        stored = {**record, "seq": len(self.records), "prev": self._last_hash}
        line = canonical_line(stored)
        self.journal._write_line(line, stored["seq"])
        self._last_hash = line_hash(line)
        self.records.append(stored)
        return stored


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
