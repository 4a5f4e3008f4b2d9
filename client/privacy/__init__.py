"""Differential privacy at a site: exact per-unit gradients, Opacus accounting, randomness only
the site knows, the write-ahead ledger, the budget check before every round, and the report."""

from client.privacy.accounting import Mechanism, calibrate_noise, epsilon_for
from client.privacy.budget import RoundPlan, plan_round
from client.privacy.ledger import (
    LedgerEntry,
    LedgerError,
    LedgerUnitError,
    MissingLedgerError,
    PrivacyLedger,
    Reservation,
    TornLedgerError,
)
from client.privacy.randomness import SiteRandomness

__all__ = [
    "LedgerEntry",
    "LedgerError",
    "LedgerUnitError",
    "Mechanism",
    "MissingLedgerError",
    "PrivacyLedger",
    "Reservation",
    "RoundPlan",
    "SiteRandomness",
    "TornLedgerError",
    "calibrate_noise",
    "epsilon_for",
    "plan_round",
]
