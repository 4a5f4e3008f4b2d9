"""``fedumit site privacy`` prints the ledger's numbers, as a table and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.config import load_site_config
from client.privacy import Mechanism, PrivacyLedger, epsilon_for
from fedumit.cli import main


def site_toml(tmp_path: Path) -> Path:
    (tmp_path / "archive").mkdir()
    path = tmp_path / "site.toml"
    path.write_text(
        '[site]\nname = "hospital-t"\narchive = "archive"\nwork_dir = "work"\n'
        "[policy]\nmax_epsilon = 5.0\ndelta = 1e-5\n",
        encoding="utf-8",
    )
    return path


def record(ledger: PrivacyLedger, run_id: str, server_round: int) -> None:
    """One settled align round of 10 steps at sigma 1.5, q 0.2."""
    reservation = ledger.reserve(
        lambda history: Mechanism(1.5, 0.2, 10),
        run_id=run_id,
        stage="align",
        server_round=server_round,
        max_grad_norm=1.0,
        delta=1e-5,
        privacy_unit="patient",
    )
    ledger.settle(reservation, steps=10, delta=1e-5)


def test_a_site_without_a_ledger_is_told_to_create_one(tmp_path, capsys) -> None:
    path = site_toml(tmp_path)
    assert main(["site", "privacy", "--site", str(path)]) == 2
    assert "--init" in capsys.readouterr().out
    assert main(["site", "privacy", "--site", str(path), "--init"]) == 0
    out = capsys.readouterr().out
    assert "created" in out and "no training recorded yet" in out
    config = load_site_config(path)
    assert config.ledger_path.is_file() and config.audit_path.is_file()
    assert main(["site", "privacy", "--site", str(path), "--init"]) == 0  # idempotent
    assert "created" not in capsys.readouterr().out


def test_report_shows_spend_budget_and_next_round(tmp_path, capsys) -> None:
    path = site_toml(tmp_path)
    assert main(["site", "privacy", "--site", str(path), "--init"]) == 0
    ledger = PrivacyLedger(load_site_config(path).ledger_path)
    for run_id, server_round in (("run-a", 1), ("run-a", 2), ("run-b", 1)):
        record(ledger, run_id, server_round)
    capsys.readouterr()
    assert main(["site", "privacy", "--site", str(path)]) == 0
    table = capsys.readouterr().out
    total = epsilon_for([Mechanism(1.5, 0.2, 10)] * 3, delta=1e-5)
    assert "run-a" in table and "run-b" in table and f"{total:.3f}" in table
    assert main(["site", "privacy", "--site", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epsilon"] == pytest.approx(total)
    assert summary["budget_left"] == pytest.approx(5.0 - total)
    assert [r["rounds"] for r in summary["runs"]] == [2, 1]
    assert summary["next_round_epsilon"] == pytest.approx(
        epsilon_for([Mechanism(1.5, 0.2, 10)] * 4, delta=1e-5)
    )


def test_torn_ledger_fails_until_repaired(tmp_path, capsys) -> None:
    path = site_toml(tmp_path)
    assert main(["site", "privacy", "--site", str(path), "--init"]) == 0
    ledger = PrivacyLedger(load_site_config(path).ledger_path)
    record(ledger, "r", 1)
    with ledger.path.open("a") as handle:
        handle.write('{"run_id": "r"')
    assert main(["site", "privacy", "--site", str(path)]) == 2
    assert "incomplete" in capsys.readouterr().out
    assert main(["site", "privacy", "--site", str(path), "--repair"]) == 0
    assert "dropped a torn last line" in capsys.readouterr().out
    assert ledger.epsilon(delta=1e-5) == pytest.approx(
        epsilon_for([Mechanism(1.5, 0.2, 10)], delta=1e-5)
    )
