"""The privacy ledger: created once, never reset, never overrun, and it never under-counts."""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from pathlib import Path

import pytest

from client.config import Policy
from client.journal import line_hash
from client.privacy import (
    LedgerError,
    LedgerUnitError,
    Mechanism,
    MissingLedgerError,
    PrivacyLedger,
    Reservation,
    TornLedgerError,
    epsilon_for,
    plan_round,
)

ROUND = Mechanism(noise_multiplier=1.1, sample_rate=0.1, steps=20)
DELTA = 1e-5


def new_ledger(path: Path, unit: str = "patient") -> PrivacyLedger:
    ledger = PrivacyLedger(path)
    ledger.initialize(site="hospital-t", privacy_unit=unit)
    return ledger


def reserve(
    ledger: PrivacyLedger,
    server_round: int,
    mechanism: Mechanism = ROUND,
    run_id: str = "run-1",
    unit: str = "patient",
) -> Reservation | None:
    """Write a round of ``mechanism`` ahead."""
    return ledger.reserve(
        lambda history: mechanism,
        run_id=run_id,
        stage="instruct",
        server_round=server_round,
        max_grad_norm=1.0,
        delta=DELTA,
        privacy_unit=unit,
    )


def train(
    ledger: PrivacyLedger, server_round: int, run_id: str = "run-1", steps: int = 20
) -> float:
    """Reserve a round like ROUND, then settle it after ``steps`` steps."""
    reservation = reserve(ledger, server_round, run_id=run_id)
    assert reservation is not None
    return ledger.settle(reservation, steps=steps, delta=DELTA)


def test_three_rounds_crash_and_restart_equal_one_uninterrupted_run(tmp_path: Path) -> None:
    uninterrupted = new_ledger(tmp_path / "a.jsonl")
    for server_round in (1, 2, 3):
        train(uninterrupted, server_round)

    crashed = new_ledger(tmp_path / "b.jsonl")
    train(crashed, 1)
    train(crashed, 2)
    del crashed  # the process dies; a new one opens the same file
    restarted = PrivacyLedger(tmp_path / "b.jsonl")
    total = train(restarted, 3)

    assert total == uninterrupted.epsilon(delta=DELTA)
    assert total == pytest.approx(epsilon_for([ROUND] * 3, delta=DELTA))
    assert [e.server_round for e in restarted.entries()] == [1, 2, 3]
    assert all(e.settled for e in restarted.entries())


def test_a_ledger_is_required_and_created_once(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl")
    with pytest.raises(MissingLedgerError, match="no privacy ledger here"):
        ledger.epsilon(delta=DELTA)
    new_ledger(tmp_path / "ledger.jsonl")
    with pytest.raises(LedgerError, match="already exists"):
        ledger.initialize(site="hospital-t", privacy_unit="patient")
    assert ledger.epsilon(delta=DELTA) == 0.0


def test_a_deleted_ledger_is_not_read_as_nothing_spent(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path / "ledger.jsonl")
    train(ledger, 1)
    ledger.path.unlink()
    with pytest.raises(MissingLedgerError, match="deleted or moved"):
        ledger.epsilon(delta=DELTA)
    with pytest.raises(LedgerError, match="already exists"):  # its head is still there
        ledger.initialize(site="hospital-t", privacy_unit="patient")


def test_truncation_and_edits_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = new_ledger(path)
    for server_round in (1, 2, 3):
        train(ledger, server_round)
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)

    path.write_bytes(b"".join(lines[:-2]))  # the last round removed, reservation and settlement
    with pytest.raises(LedgerError, match="lines were removed"):
        ledger.entries()

    edited = json.loads(lines[3])
    edited["steps"] = 1  # a round made to look cheaper
    lines_edited = [*lines[:3], json.dumps(edited).encode() + b"\n", *lines[4:]]
    path.write_bytes(b"".join(lines_edited))
    with pytest.raises(LedgerError, match="line 4 of the privacy ledger is damaged"):
        ledger.entries()

    path.write_bytes(original)
    assert ledger.epsilon(delta=DELTA) == pytest.approx(epsilon_for([ROUND] * 3, delta=DELTA))


def test_a_torn_last_line_stops_training_until_repaired(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = new_ledger(path)
    train(ledger, 1)
    before_crash = train(ledger, 2)
    with path.open("ab") as handle:  # the process died while writing the next reservation
        handle.write(b'{"delta":1e-05,"kind":"reserve","max_grad_norm":1.0,"noise_mul')
    with pytest.raises(TornLedgerError, match="line 6"):
        ledger.epsilon(delta=DELTA)
    assert ledger.repair() > 0
    assert ledger.epsilon(delta=DELTA) == before_crash
    assert ledger.repair() == 0
    assert train(ledger, 3) == pytest.approx(epsilon_for([ROUND] * 3, delta=DELTA))


def test_a_round_that_never_settled_counts_at_its_reservation(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path / "ledger.jsonl")
    train(ledger, 1, steps=5)  # stopped early: settled at the steps it ran
    reserve(ledger, 2)
    entries = PrivacyLedger(ledger.path).entries()
    assert [e.settled for e in entries] == [True, False]
    expected = epsilon_for([ROUND._replace(steps=5), ROUND], delta=DELTA)
    assert ledger.epsilon(delta=DELTA) == pytest.approx(expected)


def test_a_round_without_dp_makes_epsilon_infinite(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path / "ledger.jsonl")
    train(ledger, 1)
    policy = Policy(require_dp=False)
    plan = plan_round(
        ledger.history(), policy, dp=False, sample_rate=0.1, steps=3, noise_multiplier=0
    )
    assert plan.allowed and plan.noise_multiplier == 0
    reserve(ledger, 2, plan.mechanism)
    assert math.isinf(ledger.epsilon(delta=DELTA))
    assert not ledger.entries()[-1].dp


def test_rounds_of_another_privacy_unit_are_not_composed(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path / "ledger.jsonl", unit="patient")
    with pytest.raises(LedgerUnitError, match="'patient'"):
        reserve(ledger, 1, unit="record")
    assert ledger.entries() == []


def _plan_and_reserve(path: str, worker: int, start_at: float) -> None:
    """One site process planning a round (slowly, as calibration is) against a budget of 5."""
    ledger = PrivacyLedger(path)
    policy = Policy(max_epsilon=5.0, delta=DELTA)

    def plan(history: list[Mechanism]) -> Mechanism | None:
        time.sleep(0.5)  # the other process plans meanwhile
        planned = plan_round(
            history, policy, dp=True, sample_rate=0.05, steps=100, noise_multiplier=1.0
        )
        return planned.mechanism if planned.allowed else None

    time.sleep(max(0.0, start_at - time.time()))
    ledger.reserve(
        plan,
        run_id=f"run-{worker}",
        stage="instruct",
        server_round=1,
        max_grad_norm=1.0,
        delta=DELTA,
        privacy_unit="patient",
    )


def test_rounds_planned_concurrently_never_exceed_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    new_ledger(path)
    alone = epsilon_for([Mechanism(1.0, 0.05, 100)], delta=DELTA)
    together = epsilon_for([Mechanism(1.0, 0.05, 100)] * 2, delta=DELTA)
    assert alone < 5.0 < together  # each fits the budget, both do not

    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 8.0  # after both processes have imported everything
    workers = [
        context.Process(target=_plan_and_reserve, args=(str(path), i, start_at)) for i in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    ledger = PrivacyLedger(path)
    assert len(ledger.entries()) == 1
    assert ledger.epsilon(delta=DELTA) == pytest.approx(alone) and alone <= 5.0


def test_a_head_one_line_behind_is_a_crash_between_line_and_head(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path / "ledger.jsonl")
    train(ledger, 1)
    lines = ledger.path.read_bytes().splitlines()
    behind = len(lines) - 2  # the head still names the line before the last one
    ledger.journal.head_path.write_text(
        json.dumps({"seq": behind, "hash": line_hash(lines[behind])})
    )
    assert len(ledger.entries()) == 1  # accepted; the next append brings the head up to date
    train(ledger, 2)
    assert json.loads(ledger.journal.head_path.read_text())["seq"] == len(lines) + 1
