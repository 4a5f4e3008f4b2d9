"""The per-site privacy ledger: append-only JSON lines in the site's work folder.

Every line records one trained round: run id, stage, round, steps, sample rate ``q``, noise
multiplier ``sigma``, clipping norm ``C``, delta, privacy unit, accountant, and the cumulative
epsilon after it. Each append is flushed and fsync'ed under an exclusive file lock, so two
processes never interleave lines and a crash loses at most the line being written.

Torn lines. A crash can leave a last line without its newline or cut in the middle. That round
may have trained and its update may have left the site, so dropping it would under-count. A torn
last line therefore stops the site: :meth:`PrivacyLedger.check` raises :class:`TornLedgerError`
until someone runs :meth:`PrivacyLedger.repair`, which replaces the torn line with a
conservative entry (the largest (steps, q) and the smallest sigma any round of the ledger
used), so the total never goes down. A damaged line in the middle of the file is reported with
its line number and never repaired automatically.

Retries. Recording the same (run id, stage, round) twice counts twice: a retried round trains
again on the same data, and privacy loss of both trainings is real.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from client.privacy.accounting import Mechanism, epsilon_for


class LedgerError(ValueError):
    """The ledger file cannot be trusted as it is."""


class TornLedgerError(LedgerError):
    """The last line of the ledger is incomplete (a crash while writing)."""


@dataclass(frozen=True)
class LedgerEntry:
    """One trained round."""

    run_id: str
    stage: str
    server_round: int
    steps: int
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    privacy_unit: str
    accountant: str
    epsilon: float
    timestamp: float
    repaired: bool = False

    @property
    def mechanism(self) -> Mechanism:
        """The entry as an accounting step run."""
        return Mechanism(self.noise_multiplier, self.sample_rate, self.steps)


class PrivacyLedger:
    """Read and append a site's ledger file (created on first append)."""

    def __init__(self, path: str | Path, accountant: str = "rdp") -> None:
        self.path = Path(path)
        self.accountant = accountant

    def entries(self) -> list[LedgerEntry]:
        """All entries; raises :class:`TornLedgerError` or :class:`LedgerError` on damage."""
        entries, torn = self._read()
        if torn is not None:
            raise TornLedgerError(
                f"{self.path}: line {torn} is incomplete (the site stopped while writing it); "
                f"run `fedumit site privacy --repair` to count it conservatively"
            )
        return entries

    def check(self) -> None:
        """Raise when the ledger is damaged."""
        self.entries()

    def history(self) -> list[Mechanism]:
        """The accounting history of every recorded round."""
        return [entry.mechanism for entry in self.entries()]

    def epsilon(self, *, delta: float) -> float:
        """Total epsilon at ``delta`` over every recorded round."""
        return epsilon_for(self.history(), delta=delta, accountant=self.accountant)

    def record(
        self,
        *,
        run_id: str,
        stage: str,
        server_round: int,
        steps: int,
        sample_rate: float,
        noise_multiplier: float,
        max_grad_norm: float,
        delta: float,
        privacy_unit: str,
    ) -> float:
        """Append one trained round and return the cumulative epsilon after it."""
        with self._locked():
            history = [*self.history(), Mechanism(noise_multiplier, sample_rate, steps)]
            epsilon = epsilon_for(history, delta=delta, accountant=self.accountant)
            entry = LedgerEntry(
                run_id,
                stage,
                server_round,
                steps,
                sample_rate,
                noise_multiplier,
                max_grad_norm,
                delta,
                privacy_unit,
                self.accountant,
                epsilon,
                time.time(),
            )
            self._append(entry)
        return epsilon

    def repair(self) -> LedgerEntry | None:
        """Replace a torn last line by a conservative entry; returns it (``None`` if intact)."""
        with self._locked():
            entries, torn = self._read()
            if torn is None:
                return None
            if not entries:
                raise LedgerError(
                    f"{self.path}: the only line is torn and no earlier round bounds it; "
                    f"restore the ledger from backup"
                )
            bound = Mechanism(
                noise_multiplier=min(e.noise_multiplier for e in entries),
                sample_rate=max(e.sample_rate for e in entries),
                steps=max(e.steps for e in entries),
            )
            delta = entries[-1].delta
            worst = LedgerEntry(
                run_id="(torn line)",
                stage="?",
                server_round=-1,
                steps=bound.steps,
                sample_rate=bound.sample_rate,
                noise_multiplier=bound.noise_multiplier,
                max_grad_norm=max(e.max_grad_norm for e in entries),
                delta=delta,
                privacy_unit=entries[-1].privacy_unit,
                accountant=self.accountant,
                epsilon=epsilon_for(
                    [*(e.mechanism for e in entries), bound],
                    delta=delta,
                    accountant=self.accountant,
                ),
                timestamp=time.time(),
                repaired=True,
            )
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = "".join(lines[: len(entries)])
            temporary = self.path.with_name(self.path.name + ".repair")
            with temporary.open("w", encoding="utf-8") as handle:
                handle.write(kept + json.dumps(asdict(worst)) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self.path)
            _fsync_directory(self.path.parent)
            return worst

    def _read(self) -> tuple[list[LedgerEntry], int | None]:
        """Entries and the number of a torn last line (``None`` when intact)."""
        if not self.path.is_file():
            return [], None
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        complete, last = lines[:-1], lines[-1]  # ``last`` is "" when the file ends in \n
        entries = []
        for number, line in enumerate(complete, start=1):
            try:
                entries.append(LedgerEntry(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as error:
                if number == len(complete) and not last:
                    return entries, number
                raise LedgerError(f"{self.path}: line {number} is damaged ({error})") from error
        return entries, (len(complete) + 1 if last else None)

    def _append(self, entry: LedgerEntry) -> None:
        created = not self.path.exists()
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(entry)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_directory(self.path.parent)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
