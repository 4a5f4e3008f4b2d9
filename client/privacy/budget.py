"""The what-if before training: what would this round cost, and may the site pay it?

The planned round is added to a copy of the ledger's history (reservations not yet settled
included); if the epsilon it would reach exceeds the policy's ``max_epsilon``, the round is
refused and nothing trains. With ``noise_multiplier = 0`` the server leaves sigma to the site,
which calibrates it so that this round and the ``rounds_left - 1`` like it after it spend exactly
the rest of the budget. :meth:`client.privacy.PrivacyLedger.reserve` runs the plan under the
ledger's lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from client.config import Policy
from client.privacy.accounting import Mechanism, calibrate_noise, epsilon_for
from protocol import Refusal


@dataclass(frozen=True)
class RoundPlan:
    """The privacy side of one planned round: its mechanism, or why it is refused."""

    mechanism: Mechanism
    current_epsilon: float
    planned_epsilon: float
    refusal: Refusal | None = None
    detail: str = ""

    @property
    def allowed(self) -> bool:
        """True when the round fits the budget."""
        return self.refusal is None

    @property
    def noise_multiplier(self) -> float:
        """Sigma of the round (0 without DP)."""
        return self.mechanism.noise_multiplier


def plan_round(
    history: Sequence[Mechanism],
    policy: Policy,
    *,
    dp: bool,
    sample_rate: float,
    steps: int,
    noise_multiplier: float,
    rounds_left: int = 1,
    accountant: str = "rdp",
) -> RoundPlan:
    """Choose sigma (when asked to) and check the round against the budget.

    A round without DP is planned with sigma 0: allowed (the policy decided that before), and
    recorded, which makes the site's epsilon infinite from then on.
    """
    current = epsilon_for(history, delta=policy.delta, accountant=accountant)
    if not dp:
        return RoundPlan(Mechanism(0.0, sample_rate, steps), current, float("inf"))
    if current >= policy.max_epsilon:
        return RoundPlan(
            Mechanism(noise_multiplier, sample_rate, steps),
            current,
            current,
            Refusal.BUDGET_EXHAUSTED,
            f"privacy budget spent: epsilon {current:.3f} of {policy.max_epsilon} "
            f"(delta {policy.delta})",
        )
    if noise_multiplier <= 0:
        noise_multiplier = calibrate_noise(
            target_epsilon=policy.max_epsilon,
            delta=policy.delta,
            sample_rate=sample_rate,
            steps=steps * max(1, rounds_left),
            history=history,
            accountant=accountant,
        )
    mechanism = Mechanism(noise_multiplier, sample_rate, steps)
    planned = epsilon_for([*history, mechanism], delta=policy.delta, accountant=accountant)
    if planned > policy.max_epsilon:
        return RoundPlan(
            mechanism,
            current,
            planned,
            Refusal.BUDGET_EXCEEDED,
            f"this round would reach epsilon {planned:.3f} > budget {policy.max_epsilon} "
            f"(spent {current:.3f}, sigma {noise_multiplier:.3f}, q {sample_rate:.4f}, "
            f"{steps} steps)",
        )
    return RoundPlan(mechanism, current, planned)


def epsilon_curve(
    history: Sequence[Mechanism], mechanism: Mechanism, *, delta: float, accountant: str = "rdp"
) -> Callable[[int], float]:
    """Epsilon after ``steps_done`` steps of ``mechanism`` on top of ``history`` (progress)."""

    def epsilon_after(steps_done: int) -> float:
        partial = [*history, mechanism._replace(steps=steps_done)]
        return epsilon_for(partial, delta=delta, accountant=accountant)

    return epsilon_after
