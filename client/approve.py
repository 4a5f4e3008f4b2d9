"""``fedumit site approve``: put an app bundle on the site's approved list, saying what changed.

The bundle is a ``.fab`` file (``flwr build`` of the release the consortium agreed on), or the
Flower run id of a bundle the site refused (kept for review, never unpacked). The approval is
written to the site's audit log.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from client.audit import AuditLog
from client.config import load_site_config
from client.journal import JournalError
from deploy.approvals import Approval, SiteApprovals
from deploy.bundles import Bundle, BundleError


def run_approve(site_path: Path, which: str) -> int:
    """Approve the bundle ``which`` (a .fab path or a refused run's id); exit code 2 on error."""
    config = load_site_config(site_path)
    approvals, audit = SiteApprovals(config.work_dir), AuditLog(config.audit_path)
    try:
        bundle = _bundle(which, approvals, audit)
        audit.records()  # the log must be intact before an approval is added to it
        done = approvals.approve(bundle)
        if not done.already:
            audit.app_approved(done.approval, done.previous.sha256 if done.previous else None)
    except (BundleError, FileNotFoundError, JournalError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if done.already:
        print(f"already approved: {_describe(done.approval)}")
        return 0
    print(f"approved {_describe(done.approval)}")
    if done.previous is None:
        print("the first bundle approved at this site")
    else:
        assert done.changes is not None
        print(f"changes since {_describe(done.previous)}:\n{done.changes.describe()}")
    return 0


def _bundle(which: str, approvals: SiteApprovals, audit: AuditLog) -> Bundle:
    path = Path(which)
    if path.is_file():
        return Bundle(path.read_bytes())
    if not which.isdigit():
        raise FileNotFoundError(f"{which}: neither a .fab file nor a Flower run id")
    refused = [r for r in audit.refusals() if r["flower_run"] == int(which)]
    if not refused:
        raise FileNotFoundError(f"the audit log has no refused bundle of Flower run {which}")
    return approvals.refused(refused[-1]["sha256"])


def _describe(approval: Approval) -> str:
    when = datetime.fromtimestamp(approval.approved_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{approval.name} {approval.version} sha256 {approval.sha256} ({when})"
