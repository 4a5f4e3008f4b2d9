"""Privacy accounting with Opacus: epsilon of a (sigma, q, steps) history, and calibration.

A history is a sequence of :class:`Mechanism` entries, one per run of steps with the same noise
multiplier and sample rate. Epsilon is always recomputed from the whole history by Opacus's
accountant (RDP by default), never summed from per-round epsilons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opacus.accountants import create_accountant

ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True)
class Mechanism:
    """``steps`` Poisson-subsampled Gaussian steps with noise ``sigma`` and sample rate ``q``."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def epsilon_for(history: Sequence[Mechanism], *, delta: float, accountant: str = "rdp") -> float:
    """Epsilon at ``delta`` after every step of ``history`` (0 for an empty history)."""
    entries = [(m.noise_multiplier, m.sample_rate, m.steps) for m in history if m.steps > 0]
    if not entries:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in entries):
        return float("inf")
    opacus_accountant = create_accountant(_checked(accountant))
    opacus_accountant.history = entries
    return float(opacus_accountant.get_epsilon(delta=delta))


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    history: Sequence[Mechanism] = (),
    accountant: str = "rdp",
    tolerance: float = 0.01,
) -> float:
    """The smallest sigma whose ``steps`` more steps bring ``history`` to ``target_epsilon``.

    Opacus's ``get_noise_multiplier`` calibrates a fresh history only; a site that has already
    spent part of its budget must account for what it spent, so this bisects sigma over a copy
    of the history. Raises ``ValueError`` when the history alone already reaches the target.
    """
    spent = epsilon_for(history, delta=delta, accountant=accountant)
    if spent >= target_epsilon:
        raise ValueError(
            f"the budget is spent: epsilon {spent:.3f} already reaches the target {target_epsilon}"
        )

    def total(sigma: float) -> float:
        planned = [*history, Mechanism(sigma, sample_rate, steps)]
        return epsilon_for(planned, delta=delta, accountant=accountant)

    low, high = 0.0, 10.0
    while total(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e6:
            raise ValueError("no noise multiplier reaches the target epsilon")
    while total(high) < target_epsilon - tolerance * target_epsilon and high - low > 1e-4:
        middle = (low + high) / 2
        if middle > 0 and total(middle) > target_epsilon:
            low = middle
        else:
            high = middle
    return high


def _checked(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant {accountant!r} is not one of {ACCOUNTANTS}")
    return accountant
