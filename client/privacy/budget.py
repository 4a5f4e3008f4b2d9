"""The what-if before training: what would this round cost, and may the site pay it?

The planned round is added to a copy of the ledger's history; if the epsilon it would reach
exceeds the policy's ``max_epsilon``, the round is refused and nothing trains. With
``noise_multiplier = 0`` the server leaves sigma to the site, which calibrates it so that this
round and the ``rounds_left - 1`` like it after it spend exactly the rest of the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from client.config import Policy
from client.privacy.accounting import Mechanism, calibrate_noise, epsilon_for
from client.privacy.ledger import PrivacyLedger


@dataclass(frozen=True)
class RoundPlan:
    """The privacy side of one planned round."""

    allowed: bool
    reason: str
    noise_multiplier: float
    current_epsilon: float
    planned_epsilon: float
    epsilon_after: Callable[[int], float] | None = None


def plan_round(
    ledger: PrivacyLedger,
    policy: Policy,
    *,
    dp: bool,
    sample_rate: float,
    steps: int,
    noise_multiplier: float,
    rounds_left: int = 1,
) -> RoundPlan:
    """Choose sigma (when asked to) and check the round against the budget."""
    history = ledger.history()
    current = epsilon_for(history, delta=policy.delta, accountant=ledger.accountant)
    if not dp:
        return RoundPlan(True, "", 0.0, current, current)
    if current >= policy.max_epsilon:
        return RoundPlan(
            False,
            f"privacy budget spent: epsilon {current:.3f} of {policy.max_epsilon} "
            f"(delta {policy.delta})",
            noise_multiplier,
            current,
            current,
        )
    if noise_multiplier <= 0:
        noise_multiplier = calibrate_noise(
            target_epsilon=policy.max_epsilon,
            delta=policy.delta,
            sample_rate=sample_rate,
            steps=steps * max(1, rounds_left),
            history=history,
            accountant=ledger.accountant,
        )
    planned = epsilon_for(
        [*history, Mechanism(noise_multiplier, sample_rate, steps)],
        delta=policy.delta,
        accountant=ledger.accountant,
    )
    if planned > policy.max_epsilon:
        return RoundPlan(
            False,
            f"this round would reach epsilon {planned:.3f} > budget {policy.max_epsilon} "
            f"(spent {current:.3f}, sigma {noise_multiplier:.3f}, q {sample_rate:.4f}, "
            f"{steps} steps)",
            noise_multiplier,
            current,
            planned,
        )

    def epsilon_after(steps_done: int) -> float:
        partial = [*history, Mechanism(noise_multiplier, sample_rate, steps_done)]
        return epsilon_for(partial, delta=policy.delta, accountant=ledger.accountant)

    return RoundPlan(True, "", noise_multiplier, current, planned, epsilon_after)
