"""A site's approved app bundles: the only FedUMIT code its SuperNode runs.

The site keeps, in its work folder, ``approved-apps/approved.json`` (every approval in order:
SHA-256, app name, version, time) and a copy of each approved bundle (``<sha256>.fab``), from
which the next approval shows what changed. Bundles the site refused are kept apart in
``refused-apps/<sha256>.fab`` (never unpacked) so that a person can review one and approve it.

This module reads bundles as data only; the site's ClientApp runner imports it before any
bundle code, so it imports nothing of FedUMIT's beyond :mod:`deploy.bundles`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from deploy.bundles import Bundle, Changes, changes

APPROVED_DIR = "approved-apps"
REFUSED_DIR = "refused-apps"
INDEX = "approved.json"


@dataclass(frozen=True)
class Approval:
    """One approved bundle."""

    sha256: str
    name: str
    version: str
    approved_at: float


@dataclass(frozen=True)
class Approved:
    """What ``approve`` did: the new approval and what changed since the previous one."""

    approval: Approval
    previous: Approval | None
    changes: Changes | None
    already: bool  # the bundle was approved before


class SiteApprovals:
    """The approved and refused bundles in a site's work folder."""

    def __init__(self, work_dir: Path) -> None:
        self.approved_dir = Path(work_dir) / APPROVED_DIR
        self.refused_dir = Path(work_dir) / REFUSED_DIR

    def approvals(self) -> list[Approval]:
        """Every approval, oldest first."""
        index = self.approved_dir / INDEX
        if not index.is_file():
            return []
        return [Approval(**entry) for entry in json.loads(index.read_text(encoding="utf-8"))]

    def is_approved(self, sha256: str) -> bool:
        """Whether the bundle with this SHA-256 is approved here."""
        return any(a.sha256 == sha256 for a in self.approvals())

    def approve(self, bundle: Bundle) -> Approved:
        """Approve ``bundle``: keep a copy and record its SHA-256, name and version."""
        approvals = self.approvals()
        previous = approvals[-1] if approvals else None
        found = [a for a in approvals if a.sha256 == bundle.sha256]
        if found:
            return Approved(found[0], previous, None, already=True)
        approval = Approval(bundle.sha256, bundle.name, bundle.version, time.time())
        diff = changes(self.bundle(previous.sha256), bundle) if previous else None
        _write_atomically(self.approved_dir / f"{bundle.sha256}.fab", bundle.content)
        index = json.dumps([asdict(a) for a in [*approvals, approval]], indent=1)
        _write_atomically(self.approved_dir / INDEX, index.encode())
        return Approved(approval, previous, diff, already=False)

    def bundle(self, sha256: str) -> Bundle:
        """An approved bundle's copy."""
        return Bundle((self.approved_dir / f"{sha256}.fab").read_bytes())

    def keep_refused(self, bundle: Bundle) -> Path:
        """Keep a refused bundle (as bytes, never unpacked) for review; its path."""
        path = self.refused_dir / f"{bundle.sha256}.fab"
        if not path.is_file():
            _write_atomically(path, bundle.content)
        return path

    def refused(self, sha256: str) -> Bundle:
        """A refused bundle kept for review."""
        path = self.refused_dir / f"{sha256}.fab"
        if not path.is_file():
            raise FileNotFoundError(f"no refused bundle {sha256[:12]} kept in {self.refused_dir}")
        return Bundle(path.read_bytes())


def _write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
