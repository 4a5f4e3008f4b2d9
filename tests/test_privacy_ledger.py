"""The privacy ledger survives restarts and crashes and never under-counts."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from client.privacy import (
    LedgerError,
    Mechanism,
    PrivacyLedger,
    TornLedgerError,
    epsilon_for,
)

ROUND = {
    "steps": 20,
    "sample_rate": 0.1,
    "noise_multiplier": 1.1,
    "max_grad_norm": 1.0,
    "delta": 1e-5,
    "privacy_unit": "patient",
}


def record(ledger: PrivacyLedger, server_round: int, run_id: str = "run-1") -> float:
    return ledger.record(run_id=run_id, stage="instruct", server_round=server_round, **ROUND)


def test_three_rounds_crash_and_restart_equal_one_uninterrupted_run(tmp_path: Path) -> None:
    uninterrupted = PrivacyLedger(tmp_path / "a.jsonl")
    for server_round in (1, 2, 3):
        record(uninterrupted, server_round)

    crashed = PrivacyLedger(tmp_path / "b.jsonl")
    record(crashed, 1)
    record(crashed, 2)
    del crashed  # the process dies; a new one opens the same file
    restarted = PrivacyLedger(tmp_path / "b.jsonl")
    total = record(restarted, 3)

    assert total == uninterrupted.epsilon(delta=1e-5)
    assert restarted.epsilon(delta=1e-5) == pytest.approx(
        epsilon_for([Mechanism(1.1, 0.1, 20)] * 3, delta=1e-5)
    )
    assert [e.server_round for e in restarted.entries()] == [1, 2, 3]


def test_a_torn_last_line_stops_training_until_repaired_conservatively(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger(path)
    record(ledger, 1)
    before_crash = record(ledger, 2)
    with path.open("a", encoding="utf-8") as handle:  # the process died mid-write
        handle.write('{"run_id": "run-1", "stage": "instruct", "server_ro')
    with pytest.raises(TornLedgerError, match="line 3"):
        ledger.epsilon(delta=1e-5)
    repaired = ledger.repair()
    assert repaired is not None and repaired.repaired
    after = ledger.epsilon(delta=1e-5)
    assert after > before_crash  # the torn round is counted, never dropped
    assert after == pytest.approx(epsilon_for([Mechanism(1.1, 0.1, 20)] * 3, delta=1e-5))
    assert ledger.repair() is None


def test_a_damaged_middle_line_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger(path)
    for server_round in (1, 2, 3):
        record(ledger, server_round)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1][:20]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(LedgerError, match="line 2 is damaged"):
        ledger.entries()


def _append_many(path: str, worker: int) -> None:
    ledger = PrivacyLedger(path)
    for server_round in range(5):
        record(ledger, server_round, run_id=f"worker-{worker}")


def test_concurrent_appends_keep_every_line_intact(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(path), i)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    entries = PrivacyLedger(path).entries()
    assert len(entries) == 10
    assert sorted(e.run_id for e in entries) == ["worker-0"] * 5 + ["worker-1"] * 5
    epsilons = [e.epsilon for e in entries]
    assert epsilons == sorted(epsilons)  # each append saw every earlier one
