"""What a schedule's DP noise leaves of the learning signal, before anyone trains.

A site of ``N`` privacy units (patients) that draws each with probability ``q = B / N`` (``B``
expected patients a step) for ``T`` steps at ``(epsilon, delta)`` trains at the noise multiplier
``sigma`` its own calibration picks (:func:`client.privacy.accounting.calibrate_noise`; a site
that plans round by round with equal rounds spends the same). A step's noisy mean gradient is
``(sum of clipped gradients + N(0, sigma^2 C^2 I_d)) / (q N)``: in units of the clipping norm
``C`` the noise's norm is about ``sigma sqrt(d) / (q N)`` for ``d`` noised dimensions (every
trainable parameter, or a gradient subspace's directions), while the signal, the mean clipped
gradient, is at most 1 (every patient's gradient pointing one way) and in practice a share of
it. Over ``T`` steps a consistent signal adds up ``T`` times and the noise ``sqrt(T)`` times
(De et al. 2022, arXiv 2204.13650), so a signal of share ``s`` ends ``s sqrt(T) q N / (sigma
sqrt(d))`` times the noise's size: its signal-to-noise ratio. The coordinator's mean of the
sites' updates, weighted by their patients, averages their independent noise.

This is an estimate before training, not a promise: it ignores the optimiser (AdamW rescales
every coordinate), a signal that changes direction as the model learns, and what a site's
answer counts cost when it releases them (under 1 % more sigma). What it tells well is where
nothing can be learned: a ratio far below 1 at the full clipping norm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from client.privacy.accounting import calibrate_noise


@dataclass(frozen=True)
class SiteForecast:
    """One site's noise over a schedule, in clipping norms."""

    patients: int
    sample_rate: float
    noise_multiplier: float
    noise_norm: float
    """Expected norm of the noise on a step's mean gradient, in clipping norms."""


@dataclass(frozen=True)
class Forecast:
    """Every site's noise and the federation's, for one schedule."""

    sites: list[SiteForecast]
    epsilon: float
    delta: float
    steps: int
    dimensions: int
    noise_norm: float
    """Norm of the noise on the patient-weighted mean of the sites' steps, in clipping norms."""

    def signal_to_noise(self, signal_share: float, noise_norm: float | None = None) -> float:
        """After every step: a consistent signal of ``signal_share`` clipping norms over the
        noise (the federation's, or ``noise_norm``)."""
        noise = self.noise_norm if noise_norm is None else noise_norm
        return signal_share * math.sqrt(self.steps) / noise

    def steps_to_match(self, signal_share: float) -> float:
        """Steps after which a consistent signal of ``signal_share`` clipping norms equals the
        federation's noise, at the noise of this schedule's steps."""
        return (self.noise_norm / signal_share) ** 2

    def as_dict(self, signal_share: float) -> dict:
        """Every site's noise and the federation's, and the signal-to-noise ratios at the
        clipping norm and at ``signal_share`` of it, as JSON."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "steps": self.steps,
            "dimensions": self.dimensions,
            "signal": signal_share,
            "sites": [
                {
                    "patients": site.patients,
                    "sample_rate": site.sample_rate,
                    "noise_multiplier": site.noise_multiplier,
                    "noise_norm": site.noise_norm,
                    "signal_to_noise_at_clip": self.signal_to_noise(1.0, site.noise_norm),
                    "signal_to_noise": self.signal_to_noise(signal_share, site.noise_norm),
                }
                for site in self.sites
            ],
            "federation": {
                "noise_norm": self.noise_norm,
                "signal_to_noise_at_clip": self.signal_to_noise(1.0),
                "signal_to_noise": self.signal_to_noise(signal_share),
                "steps_to_match": self.steps_to_match(signal_share),
            },
        }


def forecast(
    patients: Sequence[int],
    *,
    batch: float,
    steps: int,
    dimensions: int,
    epsilon: float,
    delta: float,
    accountant: str = "rdp",
) -> Forecast:
    """Each site's sigma and noise for ``steps`` steps of ``batch`` expected patients under
    ``(epsilon, delta)``, and the federation's patient-weighted mean of them."""
    if not patients or min(patients) < 1:
        raise ValueError(f"every site needs at least one patient, got {list(patients)}")
    if batch <= 0 or steps < 1 or dimensions < 1:
        raise ValueError(
            f"need a positive batch, steps and dimensions, got {batch}, {steps}, {dimensions}"
        )
    by_size = {}  # sites of one size sample at one rate: one calibration
    for count in sorted(set(patients)):
        rate = min(1.0, batch / count)
        sigma = calibrate_noise(
            target_epsilon=epsilon,
            delta=delta,
            sample_rate=rate,
            steps=steps,
            accountant=accountant,
        )
        by_size[count] = SiteForecast(
            count, rate, sigma, sigma * math.sqrt(dimensions) / (rate * count)
        )
    sites = [by_size[count] for count in patients]
    total = sum(patients)
    pooled = math.sqrt(sum((site.patients / total * site.noise_norm) ** 2 for site in sites))
    return Forecast(sites, epsilon, delta, steps, dimensions, pooled)
