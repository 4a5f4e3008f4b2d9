"""One round at a site, Flower-free: a server request in, a reply out.

``train_round`` checks the fingerprint and the policy, plans the privacy spend and refuses a
round that would exceed the budget, trains, writes the ledger, and returns the updated arrays
with numbers only. ``evaluate_round`` scores the global adapter on the site's val split.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client.policy import RoundRequest, apply_policy
from client.privacy import PrivacyLedger, plan_round
from client.site import Site
from client.trainer import TrainConfig, steps_for_epochs
from shared_model.evaluation import evaluate_samples
from shared_model.inference import Answerer

log = logging.getLogger(__name__)


@dataclass
class RoundReply:
    """What a site sends back: arrays (absent when refused), numbers, and a status."""

    arrays: dict[str, np.ndarray] | None
    metrics: dict[str, float]
    status: str = "ok"
    reason: str = ""
    notes: list[str] = field(default_factory=list)


class FingerprintMismatch(ValueError):
    """The server's model is not the site's model."""


def check_fingerprint(site: Site, fingerprint: str) -> None:
    """Refuse messages for another base checkpoint or adapter layout."""
    if fingerprint != site.fingerprint:
        raise FingerprintMismatch(
            f"server fingerprint {fingerprint!r} differs from site {site.config.name!r}'s "
            f"{site.fingerprint!r}: different base checkpoint or adapter layout"
        )


def request_from_config(config: Mapping[str, Any]) -> RoundRequest:
    """The round's training request from the server's config record."""
    return RoundRequest(
        stage=str(config["stage"]),
        local_steps=int(config.get("local-steps", 0)),
        local_epochs=float(config.get("local-epochs", 0.0)),
        learning_rate=float(config["lr"]),
        batch_size=int(config["batch-size"]),
        dp=bool(config.get("dp", True)),
        noise_multiplier=float(config.get("noise-multiplier", 0.0)),
        max_grad_norm=float(config.get("max-grad-norm", 1.0)),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
    )


def train_round(
    site: Site,
    arrays: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    align_arrays: Mapping[str, np.ndarray] | None = None,
) -> RoundReply:
    """Train the requested stage locally under the site's policy and privacy budget."""
    check_fingerprint(site, str(config["fingerprint"]))
    decision = apply_policy(request_from_config(config), site.config.policy)
    ledger = PrivacyLedger(site.config.ledger_path)
    spent = ledger.epsilon(delta=site.config.policy.delta)
    if decision.refused:
        return _refusal(decision.refusal, spent, site)
    request = decision.request
    samples = site.samples("train", request.stage)
    if not samples:
        return _refusal(f"no usable {request.stage} training records", spent, site)
    unit_keys = site.unit_keys(samples)
    n_units = len(set(unit_keys))
    sample_rate = min(1.0, request.batch_size / n_units)
    steps = _steps(request, sample_rate, site.config.policy.max_local_epochs)
    plan = plan_round(
        ledger,
        site.config.policy,
        dp=request.dp,
        sample_rate=sample_rate,
        steps=steps,
        noise_multiplier=request.noise_multiplier,
        rounds_left=int(config.get("rounds-left", 1)),
    )
    if not plan.allowed:
        return _refusal(plan.reason, spent, site)
    trainer = site.trainer(request.stage, align_arrays)
    trainer.adapter.load_arrays(arrays, site.fingerprint)
    train_config = TrainConfig(
        steps=steps,
        sample_rate=sample_rate,
        learning_rate=request.learning_rate,
        dp=request.dp,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=request.max_grad_norm,
        physical_batch_size=int(config.get("physical-batch-size", 16)),
        proximal_mu=request.proximal_mu,
        seed=_seed(config, site),
    )
    result = trainer.train(
        samples, unit_keys, train_config, epsilon_at=plan.epsilon_after, progress=site.progress
    )
    epsilon = spent
    if request.dp:
        epsilon = ledger.record(
            run_id=str(config.get("run-id", "")),
            stage=request.stage,
            server_round=int(config["server-round"]),
            steps=steps,
            sample_rate=sample_rate,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=request.max_grad_norm,
            delta=site.config.policy.delta,
            privacy_unit=site.config.policy.privacy_unit,
        )
    metrics = {
        "num-examples": float(result.num_examples),
        "train-loss": result.loss,
        "steps": float(result.steps),
        "seconds": result.seconds,
        "epsilon": float(epsilon),
        "delta": site.config.policy.delta,
        "noise-multiplier": plan.noise_multiplier if request.dp else 0.0,
    }
    return RoundReply(result.arrays, metrics, notes=list(decision.clamped))


def evaluate_round(
    site: Site,
    arrays: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    align_arrays: Mapping[str, np.ndarray] | None = None,
) -> RoundReply:
    """Score the global adapter of the stage on the site's val split, per task and language."""
    check_fingerprint(site, str(config["fingerprint"]))
    stage = str(config["stage"])
    samples = site.samples(str(config.get("split", "val")), stage)
    if not samples:
        return RoundReply(None, {"num-examples": 0.0})
    trainer = site.trainer(stage, align_arrays)
    trainer.adapter.load_arrays(arrays, site.fingerprint)
    answerer = Answerer(trainer.adapter.model, trainer.processor, site.spec.canvas)
    metrics = evaluate_samples(answerer, samples)
    metrics["num-examples"] = float(len(samples))
    return RoundReply(None, metrics)


def _steps(request: RoundRequest, sample_rate: float, max_epochs: float) -> int:
    """Requested steps (epochs win), capped so no unit is visited more than ``max_epochs``."""
    if request.local_epochs > 0:
        steps = steps_for_epochs(request.local_epochs, sample_rate)
    else:
        steps = request.local_steps
    return max(1, min(steps, math.floor(max_epochs / sample_rate)))


def _seed(config: Mapping[str, Any], site: Site) -> int | None:
    """Reproducible sampling and noise only when the run asks for it (simulations)."""
    if not bool(config.get("reproducible", False)):
        return None
    seed = int(config.get("seed", 0)) * 1_000_003 + int(config["server-round"]) * 7_919
    return seed + sum(site.config.name.encode()) + (0 if config["stage"] == "align" else 1)


def _refusal(reason: str, epsilon: float, site: Site) -> RoundReply:
    log.warning("%s refuses this round: %s", site.config.name, reason)
    metrics = {"num-examples": 0.0, "epsilon": float(epsilon), "delta": site.config.policy.delta}
    return RoundReply(None, metrics, status="refused", reason=reason)
