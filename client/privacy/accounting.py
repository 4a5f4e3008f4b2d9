"""Privacy accounting with Opacus: epsilon of a (sigma, q, steps) history, and calibration.

A history is a sequence of :class:`Mechanism` entries (plain ``(noise_multiplier, sample_rate,
steps)`` tuples work too), one per run of Poisson-subsampled Gaussian steps. Epsilon is always
recomputed from the whole history by an Opacus accountant, never summed from per-round epsilons.

The history is handed to Opacus exactly as its accountant would have built it by calling
``step()`` once per step: consecutive entries with the same sigma and q merge into one. So the
epsilon here is bit for bit the epsilon of an Opacus accountant stepped through every step.
For the RDP accountant the per-step RDP curve of each (q, sigma) is computed once by Opacus's
``compute_rdp`` and kept, which makes long ledgers and calibration cheap; the sum and the
conversion to (epsilon, delta) are Opacus's own, in the same order as ``RDPAccountant``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from opacus.accountants import IAccountant, RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis

ACCOUNTANTS = ("rdp", "prv")
MAX_NOISE_MULTIPLIER = 1e6


class Mechanism(NamedTuple):
    """``steps`` Poisson-subsampled Gaussian steps with noise ``sigma`` and sample rate ``q``."""

    noise_multiplier: float
    sample_rate: float
    steps: int


class BudgetSpentError(ValueError):
    """The history alone already reaches the target epsilon: no sigma can help."""


def as_mechanism(entry: Mechanism | tuple[float, float, int]) -> Mechanism:
    """Validate one ``(noise_multiplier, sample_rate, steps)`` entry.

    Raises
    ------
    ValueError
        Naming the field and the value when sigma is negative or not finite, q is outside
        ``(0, 1]`` or steps is not a non-negative integer.
    """
    sigma, q, steps = entry
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r} in {entry!r}")
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {sigma!r} in {entry!r}")
    if not (isinstance(q, int | float) and 0 < q <= 1):
        raise ValueError(f"sample_rate must be in (0, 1], got {q!r} in {entry!r}")
    return Mechanism(float(sigma), float(q), int(steps))


def opacus_history(
    history: Iterable[Mechanism | tuple[float, float, int]],
) -> list[tuple[float, float, int]]:
    """The history as an Opacus accountant's ``history`` list after stepping through it.

    Entries with no steps are dropped; consecutive entries with equal sigma and q merge, exactly
    as ``RDPAccountant.step`` and ``PRVAccountant.step`` merge them.
    """
    merged: list[tuple[float, float, int]] = []
    for sigma, q, steps in map(as_mechanism, history):
        if steps == 0:
            continue
        if merged and merged[-1][:2] == (sigma, q):
            merged[-1] = (sigma, q, merged[-1][2] + steps)
        else:
            merged.append((sigma, q, steps))
    return merged


def make_accountant(
    history: Iterable[Mechanism | tuple[float, float, int]], *, accountant: str = "rdp"
) -> IAccountant:
    """A fresh Opacus accountant (``rdp`` or ``prv``) holding ``history``."""
    opacus_accountant = create_accountant(mechanism=_checked(accountant))
    opacus_accountant.history = opacus_history(history)
    return opacus_accountant


def epsilon_for(
    history: Iterable[Mechanism | tuple[float, float, int]],
    *,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """Epsilon at ``delta`` after every step of ``history``.

    Parameters
    ----------
    history:
        ``(noise_multiplier, sample_rate, steps)`` entries in the order they were spent.
    delta:
        Target delta, in ``(0, 1)``.
    accountant:
        ``"rdp"`` (default) or ``"prv"``.

    Returns
    -------
    float
        0 for an empty history, ``inf`` when any step ran without noise.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    entries = opacus_history(history)
    if not entries:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in entries):
        return math.inf
    if _checked(accountant) == "rdp":
        rdp = sum([_rdp_per_step(q, sigma) * steps for sigma, q, steps in entries])
        with warnings.catch_warnings():
            # Opacus warns when the best order is the first or last of its range: the epsilon
            # is then an upper bound (never an under-count). Calibration and progress bars ask
            # thousands of times; the warning would bury every other line of a run.
            warnings.filterwarnings("ignore", message="Optimal order is the")
            epsilon, _ = rdp_analysis.get_privacy_spent(
                orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta
            )
        return float(epsilon)
    return float(make_accountant(entries, accountant=accountant).get_epsilon(delta=delta))


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    history: Iterable[Mechanism | tuple[float, float, int]] = (),
    accountant: str = "rdp",
    epsilon_tolerance: float = 0.01,
) -> float:
    """The sigma whose ``steps`` more steps at rate ``q`` bring ``history`` to ``target_epsilon``.

    Opacus's ``get_noise_multiplier`` searches sigma over a history of one entry, the planned
    steps alone: it cannot see what a site has already spent. A site that wants to spend the
    rest of its budget must compose the planned steps with its past, so this bisects sigma over
    a copy of the history with the planned entry appended (epsilon falls as sigma grows).

    Returns
    -------
    float
        Sigma with ``target_epsilon - epsilon_tolerance <= epsilon <= target_epsilon`` for the
        whole history; never above the target.

    Raises
    ------
    BudgetSpentError
        When the history alone already reaches ``target_epsilon``.
    ValueError
        When even sigma = 1e6 overshoots (a target below what the accountant can certify).
    """
    past = [as_mechanism(entry) for entry in history]
    planned = as_mechanism((1.0, sample_rate, steps))
    if planned.steps == 0:
        raise ValueError("calibration needs at least one planned step")
    spent = epsilon_for(past, delta=delta, accountant=accountant)
    if spent >= target_epsilon:
        raise BudgetSpentError(
            f"the budget is spent: epsilon {spent:.4f} already reaches the target "
            f"{target_epsilon} (delta {delta})"
        )

    def total(sigma: float) -> float:
        return epsilon_for(
            [*past, Mechanism(sigma, sample_rate, steps)], delta=delta, accountant=accountant
        )

    low, high = 0.0, 1.0
    epsilon_high = total(high)
    while epsilon_high > target_epsilon:
        low, high = high, 2 * high
        if high > MAX_NOISE_MULTIPLIER:
            raise ValueError(
                f"no noise multiplier up to {MAX_NOISE_MULTIPLIER:g} keeps epsilon within "
                f"{target_epsilon} at delta {delta}: the target is too small"
            )
        epsilon_high = total(high)
    # invariant: total(high) <= target < total(low), with total(0) = inf
    while target_epsilon - epsilon_high > epsilon_tolerance and high - low > 1e-9 * high:
        middle = (low + high) / 2
        epsilon_middle = total(middle)
        if epsilon_middle <= target_epsilon:
            high, epsilon_high = middle, epsilon_middle
        else:
            low = middle
    return high


@lru_cache(maxsize=4096)
def _rdp_per_step(sample_rate: float, noise_multiplier: float) -> np.ndarray:
    """Opacus's RDP curve of one step at every default order (read-only, cached)."""
    curve = rdp_analysis.compute_rdp(
        q=sample_rate,
        noise_multiplier=noise_multiplier,
        steps=1,
        orders=RDPAccountant.DEFAULT_ALPHAS,
    )
    curve.flags.writeable = False
    return curve


def _checked(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant {accountant!r} is not one of {ACCOUNTANTS}")
    return accountant
