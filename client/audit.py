"""The site's audit log: a durable record of every message received and every reply sent.

A hash-chained :class:`~client.journal.Journal` in the work folder (``audit.jsonl``), created with
the privacy ledger. Before a message is acted on, a ``received`` record is written: the message
type, Flower's run, FedUMIT's run id, stage and round, the app's identity, SHA-256 and size of
every array record, every config value the server sent and which keys the site ignored. Before a
reply leaves, a ``replied`` record is written: status and refusal code, SHA-256 and size of the
arrays, every metric and meta value sent, and the site's epsilon after the exchange. A reply that
cannot be recorded does not leave (the ClientApp sends a bare refusal instead). An app bundle the
site refused to run (not on its approved list) is an ``app-refused`` record, and each approval
``fedumit site approve`` gives an ``app-approved`` record: the bundle's SHA-256, name and version.
Under secure aggregation each step of Flower's SecAgg+ protocol adds a ``secagg`` record; the
masking step's says what was masked (:mod:`client.secure_aggregation`).

``fedumit site audit`` prints the log and verifies its chain.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import Message

from client.journal import Journal
from protocol import STATUS_OK, arrays_sha256, from_record

if TYPE_CHECKING:
    from deploy.approvals import Approval
    from deploy.bundles import Bundle

RECEIVED = "received"
REPLIED = "replied"
SECURE_AGGREGATION = "secagg"
APP_REFUSED = "app-refused"
APP_APPROVED = "app-approved"


@dataclass(frozen=True)
class EvaluationCount:
    """Evaluations the site answered: in one run, and over its lifetime."""

    in_run: int
    total: int


class AuditLog:
    """A site's audit log file."""

    def __init__(self, path: str | Path) -> None:
        self.journal = Journal(path, what="audit log")
        self.path = self.journal.path

    def initialize(self, *, site: str) -> dict[str, Any]:
        """Create the log (once, with the ledger)."""
        return self.journal.create({"event": "created", "site": site, "time": time.time()})

    def exists(self) -> bool:
        """Whether an audit log was created here."""
        return self.journal.exists()

    def records(self) -> list[dict[str, Any]]:
        """Every record, verified; raises :class:`client.journal.JournalError` on damage."""
        return self.journal.records()

    def received(
        self,
        message: Message,
        config: Mapping[str, Any],
        ignored: list[str],
        app: str,
    ) -> dict[str, Any]:
        """Record a message before the site acts on it."""
        return self.journal.append(
            {
                "event": RECEIVED,
                "time": time.time(),
                "message_type": message.metadata.message_type,
                "flower_run": int(message.metadata.run_id),
                "app": app,
                **_round_fields(config),
                "arrays": _describe_arrays(message),
                "config": {key: _plain(value) for key, value in sorted(config.items())},
                "ignored_keys": sorted(ignored),
            }
        )

    def replied(
        self, request: Message, reply: Message, config: Mapping[str, Any], epsilon: float | None
    ) -> dict[str, Any]:
        """Record a reply before it leaves the site."""
        content = reply.content
        return self.journal.append(
            {
                "event": REPLIED,
                "time": time.time(),
                "message_type": request.metadata.message_type,
                "flower_run": int(request.metadata.run_id),
                **_round_fields(config),
                "arrays": _describe_arrays(reply),
                "metrics": {
                    k: _plain(v) for rec in content.metric_records.values() for k, v in rec.items()
                },
                "meta": {
                    k: _plain(v) for rec in content.config_records.values() for k, v in rec.items()
                },
                "epsilon": epsilon,
            }
        )

    def app_refused(self, *, flower_run: int, bundle: Bundle, kept: Path) -> dict[str, Any]:
        """Record an app bundle the site refused to run (none of its code was loaded)."""
        app, version = bundle.identity()
        return self.journal.append(
            {
                "event": APP_REFUSED,
                "time": time.time(),
                "flower_run": flower_run,
                "sha256": bundle.sha256,
                "app": app,
                "version": version,
                "kept": str(kept),
            }
        )

    def app_approved(self, approval: Approval, previous: str | None) -> dict[str, Any]:
        """Record that a person approved an app bundle for this site."""
        return self.journal.append(
            {
                "event": APP_APPROVED,
                "time": time.time(),
                "sha256": approval.sha256,
                "app": approval.name,
                "version": approval.version,
                "previous": previous,
            }
        )

    def refusals(self) -> list[dict[str, Any]]:
        """Every ``app-refused`` record, oldest first."""
        return [r for r in self.journal.records() if r.get("event") == APP_REFUSED]

    def secure_aggregation(
        self, message: Message, step: str, details: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Record one step of the SecAgg+ protocol before its reply leaves: the step, the
        server round (Flower's message group) and, for the masking step, what was masked."""
        return self.journal.append(
            {
                "event": SECURE_AGGREGATION,
                "time": time.time(),
                "flower_run": int(message.metadata.run_id),
                "server_round": message.metadata.group_id,
                "step": step,
                **{key: _plain(value) for key, value in sorted(details.items())},
            }
        )

    def evaluations(self, run_id: str) -> EvaluationCount:
        """Evaluations answered (status ok) in run ``run_id`` and in total."""
        answered = [
            record
            for record in self.journal.records()
            if record.get("event") == REPLIED
            and record.get("message_type") == "evaluate"
            and record.get("meta", {}).get("status") == STATUS_OK
        ]
        in_run = sum(1 for record in answered if record.get("run_id") == run_id)
        return EvaluationCount(in_run, len(answered))


def _round_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": str(config.get("run-id", "")),
        "stage": str(config.get("stage", "")),
        "server_round": _plain(config.get("server-round")),
    }


def _describe_arrays(message: Message) -> dict[str, dict[str, Any]]:
    """SHA-256, size in bytes and array count of each array record of a message."""
    if message.has_error() or not message.has_content():
        return {}
    described = {}
    for name, record in message.content.array_records.items():
        arrays = from_record(record)
        described[name] = {
            "sha256": arrays_sha256(arrays),
            "bytes": record.count_bytes(),
            "arrays": len(arrays),
        }
    return described


def _plain(value: Any) -> Any:
    """A config or metric value as JSON can hold it (lists stay lists, bytes are sized)."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
