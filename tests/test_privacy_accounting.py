"""Accounting matches Opacus exactly; calibration over a spent history reaches its target."""

from __future__ import annotations

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from client.config import Policy
from client.privacy import Mechanism, calibrate_noise, epsilon_for, plan_round
from client.privacy.budget import epsilon_curve
from protocol import Refusal


@pytest.mark.parametrize("sigma, q, steps", [(1.1, 0.05, 100), (0.8, 0.2, 30), (2.0, 1.0, 5)])
def test_epsilon_equals_opacus_rdp(sigma: float, q: float, steps: int) -> None:
    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=sigma, sample_rate=q)
    expected = accountant.get_epsilon(delta=1e-5)
    assert epsilon_for([Mechanism(sigma, q, steps)], delta=1e-5) == expected


def test_prv_accountant_is_available() -> None:
    accountant = PRVAccountant()
    for _ in range(50):
        accountant.step(noise_multiplier=1.0, sample_rate=0.1)
    assert epsilon_for([Mechanism(1.0, 0.1, 50)], delta=1e-5, accountant="prv") == pytest.approx(
        accountant.get_epsilon(delta=1e-5), rel=1e-6
    )


def test_composition_equals_one_accountant_stepped_through_everything() -> None:
    history = [Mechanism(1.2, 0.1, 40), Mechanism(0.9, 0.05, 60), Mechanism(1.2, 0.1, 10)]
    accountant = RDPAccountant()
    for mechanism in history:
        for _ in range(mechanism.steps):
            accountant.step(
                noise_multiplier=mechanism.noise_multiplier, sample_rate=mechanism.sample_rate
            )
    assert epsilon_for(history, delta=1e-5) == pytest.approx(
        accountant.get_epsilon(1e-5), rel=1e-12
    )


def test_calibration_on_a_fresh_history_agrees_with_opacus() -> None:
    sigma = calibrate_noise(target_epsilon=3.0, delta=1e-5, sample_rate=0.05, steps=200)
    opacus_sigma = get_noise_multiplier(
        target_epsilon=3.0, target_delta=1e-5, sample_rate=0.05, steps=200
    )
    assert sigma == pytest.approx(opacus_sigma, rel=0.02)
    assert 2.97 <= epsilon_for([Mechanism(sigma, 0.05, 200)], delta=1e-5) <= 3.0


def test_calibration_accounts_for_what_was_spent() -> None:
    spent = [Mechanism(1.5, 0.05, 100)]
    sigma = calibrate_noise(
        target_epsilon=4.0, delta=1e-5, sample_rate=0.05, steps=100, history=spent
    )
    total = epsilon_for([*spent, Mechanism(sigma, 0.05, 100)], delta=1e-5)
    assert 3.96 <= total <= 4.0
    with pytest.raises(ValueError, match="budget is spent"):
        calibrate_noise(target_epsilon=0.01, delta=1e-5, sample_rate=0.05, steps=1, history=spent)


def test_a_round_that_would_overshoot_is_refused() -> None:
    policy = Policy(max_epsilon=2.0, delta=1e-5)
    plan = plan_round([], policy, dp=True, sample_rate=0.5, steps=50, noise_multiplier=0.6)
    assert plan.refusal is Refusal.BUDGET_EXCEEDED and "would reach epsilon" in plan.detail
    assert plan.planned_epsilon > 2.0 and plan.current_epsilon == 0.0
    calibrated = plan_round(
        [], policy, dp=True, sample_rate=0.5, steps=50, noise_multiplier=0.0, rounds_left=3
    )
    assert calibrated.allowed and calibrated.planned_epsilon < 2.0
    curve = epsilon_curve([], calibrated.mechanism, delta=1e-5)
    assert curve(50) == pytest.approx(calibrated.planned_epsilon)
    spent = plan_round(
        [Mechanism(0.5, 0.5, 500)], policy, dp=True, sample_rate=0.5, steps=1, noise_multiplier=1
    )
    assert spent.refusal is Refusal.BUDGET_EXHAUSTED
