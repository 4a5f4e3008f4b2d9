"""Differential privacy at a site: exact per-unit gradients, Opacus accounting, the ledger, the
budget check before every round, and the ledger report."""

from client.privacy.accounting import Mechanism, calibrate_noise, epsilon_for
from client.privacy.budget import RoundPlan, plan_round
from client.privacy.ledger import LedgerEntry, LedgerError, PrivacyLedger, TornLedgerError

__all__ = [
    "LedgerEntry",
    "LedgerError",
    "Mechanism",
    "PrivacyLedger",
    "RoundPlan",
    "TornLedgerError",
    "calibrate_noise",
    "epsilon_for",
    "plan_round",
]
