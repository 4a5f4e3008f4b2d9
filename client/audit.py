"""The site's audit log: a durable record of every message received and every reply sent.

A hash-chained :class:`~client.journal.Journal` in the work folder (``audit.jsonl``), created with
the privacy ledger. Before a message is acted on, a ``received`` record is written: the message
type, Flower's run, FedUMIT's run id, stage and round, the app's identity, SHA-256 and size of
every array record, every config value the server sent and which keys the site ignored. Before a
reply leaves, a ``replied`` record is written: status and refusal code, SHA-256 and size of the
arrays, every metric and meta value sent, and the site's epsilon after the exchange. A reply that
cannot be recorded does not leave (the ClientApp sends a bare refusal instead).

``fedumit site audit`` prints the log and verifies its chain.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Message

from client.journal import Journal
from protocol import STATUS_OK, arrays_sha256, from_record

RECEIVED = "received"
REPLIED = "replied"


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
        described[name] = {
            "sha256": arrays_sha256(from_record(record)),
            "bytes": record.count_bytes(),
            "arrays": len(record),
        }
    return described


def _plain(value: Any) -> Any:
    """A config or metric value as JSON can hold it (lists stay lists, bytes are sized)."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
