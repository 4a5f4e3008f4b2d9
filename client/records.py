"""A site's durable records, created together once: the privacy ledger and the audit log.

``fedumit site privacy --init`` (or ``fedumit supernode --init-ledger`` on a site's first
start) creates both; from then on a site trains only while both are intact.
"""

from __future__ import annotations

import logging
from pathlib import Path

from client.audit import AuditLog
from client.config import SiteConfig
from client.privacy.ledger import PrivacyLedger


def initialize_site_records(config: SiteConfig) -> list[Path]:
    """Create the site's ledger and audit log where missing; return the files created.

    Raises :class:`client.journal.JournalError` when one exists but is damaged or half there
    (a head without its file): a person must look before a new one hides the old spend.
    """
    created = []
    ledger = PrivacyLedger(config.ledger_path)
    if not ledger.exists():
        ledger.initialize(site=config.name, privacy_unit=config.policy.privacy_unit)
        created.append(ledger.path)
    ledger.entries()
    audit = AuditLog(config.audit_path)
    if not audit.exists():
        audit.initialize(site=config.name)
        created.append(audit.path)
    audit.records()
    return created


def site_logger(config: SiteConfig) -> logging.Logger:
    """The site's own log (``site.log`` in its work folder, and the console): refusal and
    error details that never leave the site are written here."""
    logger = logging.getLogger(f"fedumit.site.{config.name}")
    path = str(config.log_path)
    if not any(getattr(h, "baseFilename", None) == path for h in logger.handlers):
        config.work_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger
