"""The per-site privacy ledger: every round's privacy spend, before it happens and after.

The ledger is a hash-chained :class:`~client.journal.Journal` in the site's work folder
(``privacy_ledger.jsonl``). It is created once, by a person (``fedumit site privacy --init``,
or ``fedumit supernode --init-ledger`` on a site's first start), and is required from then on:
a missing, truncated, edited or torn ledger makes the site refuse every round until someone
looks. Its first line fixes the site's privacy unit; rounds of another unit are refused rather
than composed as if they protected the same thing.

A round is written twice (write-ahead):

1. ``reserve`` — under the ledger's inter-process lock the round is planned against every
   earlier round, reservations not yet settled included, and its worst case (every planned
   step) is appended *before* training starts. Two rounds planned at the same time therefore
   see each other, and together never exceed the budget.
2. ``settle`` — after training, before the reply leaves, the steps actually run.

A round whose process died between the two stays counted at its reservation: a crash
over-counts, never under-counts. A round without DP (``noise_multiplier`` 0, allowed only where
the policy does not require DP) is recorded too, and makes the site's epsilon infinite.
Retries count again: a retried round trains again on the same data.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.journal import Journal, JournalError, MissingJournalError, TornJournalError
from client.privacy.accounting import Mechanism, epsilon_for

LedgerError = JournalError
MissingLedgerError = MissingJournalError
TornLedgerError = TornJournalError


class LedgerUnitError(JournalError):
    """The ledger was started for another privacy unit than the round's."""


@dataclass(frozen=True)
class LedgerEntry:
    """One round as the ledger counts it (its reservation, and its settlement if any)."""

    seq: int
    run_id: str
    stage: str
    server_round: int
    steps: int
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    privacy_unit: str
    timestamp: float
    settled: bool

    @property
    def mechanism(self) -> Mechanism:
        """The round as an accounting step run (sigma 0 for a round without DP)."""
        return Mechanism(self.noise_multiplier, self.sample_rate, self.steps)

    @property
    def dp(self) -> bool:
        """Whether the round ran DP-SGD."""
        return self.noise_multiplier > 0


@dataclass(frozen=True)
class Reservation:
    """A round written ahead: its ledger line and the mechanism it may spend."""

    seq: int
    mechanism: Mechanism


class PrivacyLedger:
    """A site's privacy ledger file.

    Parameters
    ----------
    path:
        ``privacy_ledger.jsonl`` in the site's work folder.
    accountant:
        Opacus accountant that turns the history into epsilon (``rdp`` or ``prv``).
    """

    def __init__(self, path: str | Path, accountant: str = "rdp") -> None:
        self.journal = Journal(path, what="privacy ledger")
        self.path = self.journal.path
        self.accountant = accountant

    def initialize(self, *, site: str, privacy_unit: str) -> dict[str, Any]:
        """Create the ledger (once): its first line names the site and the privacy unit."""
        return self.journal.create(
            {
                "kind": "genesis",
                "site": site,
                "privacy_unit": privacy_unit,
                "accountant": self.accountant,
                "ledger_id": secrets.token_hex(8),
                "time": time.time(),
            }
        )

    def exists(self) -> bool:
        """Whether a ledger was created here (its file or its head is on disk)."""
        return self.journal.exists()

    def privacy_unit(self) -> str:
        """The privacy unit the ledger was started for."""
        return str(self.journal.records()[0]["privacy_unit"])

    def entries(self) -> list[LedgerEntry]:
        """Every round, in order; raises :class:`LedgerError` when the ledger is damaged."""
        return _entries(self.journal.records())

    def history(self) -> list[Mechanism]:
        """The accounting history of every round (reserved or settled)."""
        return [entry.mechanism for entry in self.entries()]

    def epsilon(self, *, delta: float) -> float:
        """Total epsilon at ``delta`` over every round."""
        return epsilon_for(self.history(), delta=delta, accountant=self.accountant)

    def reserve(
        self,
        plan: Callable[[list[Mechanism]], Mechanism | None],
        *,
        run_id: str,
        stage: str,
        server_round: int,
        max_grad_norm: float,
        delta: float,
        privacy_unit: str,
    ) -> Reservation | None:
        """Plan and write ahead one round, atomically.

        ``plan(history)`` sees every earlier round and returns the round's mechanism, or
        ``None`` to refuse; both run under the ledger's lock, so no other round can be planned
        in between.
        """
        with self.journal.session() as session:
            unit = str(session.records[0]["privacy_unit"])
            if unit != privacy_unit:
                raise LedgerUnitError(
                    f"{self.path}: the ledger counts privacy unit {unit!r}; a {privacy_unit!r} "
                    f"round cannot be composed with it (start a new ledger for a new unit)"
                )
            entries = _entries(session.records)
            mechanism = plan([entry.mechanism for entry in entries])
            if mechanism is None:
                return None
            stored = session.append(
                {
                    "kind": "reserve",
                    "run_id": run_id,
                    "stage": stage,
                    "server_round": server_round,
                    "steps": mechanism.steps,
                    "sample_rate": mechanism.sample_rate,
                    "noise_multiplier": mechanism.noise_multiplier,
                    "max_grad_norm": max_grad_norm,
                    "delta": delta,
                    "privacy_unit": privacy_unit,
                    "time": time.time(),
                }
            )
        return Reservation(stored["seq"], mechanism)

    def settle(self, reservation: Reservation, *, steps: int, delta: float) -> float:
        """Record the steps a reserved round ran (at most its reservation); return epsilon."""
        if not 0 <= steps <= reservation.mechanism.steps:
            raise ValueError(f"settled steps {steps} outside 0..{reservation.mechanism.steps}")
        with self.journal.session() as session:
            session.append(
                {
                    "kind": "settle",
                    "reservation": reservation.seq,
                    "steps": steps,
                    "time": time.time(),
                }
            )
            history = [entry.mechanism for entry in _entries(session.records)]
        return epsilon_for(history, delta=delta, accountant=self.accountant)

    def repair(self) -> int:
        """Drop a torn last line (a write that never completed, so never acted on: rounds are
        written before they train) and note it in the ledger; returns the bytes dropped."""
        torn = self.journal.drop_torn_tail()
        if torn:
            self.journal.append({"kind": "repair", "dropped_bytes": len(torn), "time": time.time()})
        return len(torn)


def _entries(records: list[dict[str, Any]]) -> list[LedgerEntry]:
    """Rounds from ledger records: reservations, with the steps of their settlement."""
    reserved: dict[int, dict[str, Any]] = {}
    settled: dict[int, int] = {}
    for record in records:
        if record.get("kind") == "reserve":
            reserved[record["seq"]] = record
        elif record.get("kind") == "settle":
            settled[int(record["reservation"])] = int(record["steps"])
    return [
        LedgerEntry(
            seq=seq,
            run_id=str(record["run_id"]),
            stage=str(record["stage"]),
            server_round=int(record["server_round"]),
            steps=settled.get(seq, int(record["steps"])),
            sample_rate=float(record["sample_rate"]),
            noise_multiplier=float(record["noise_multiplier"]),
            max_grad_norm=float(record["max_grad_norm"]),
            delta=float(record["delta"]),
            privacy_unit=str(record["privacy_unit"]),
            timestamp=float(record["time"]),
            settled=seq in settled,
        )
        for seq, record in reserved.items()
    ]
