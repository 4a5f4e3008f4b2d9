"""One round at a site, Flower-free: a server request in, a reply out.

``train_round`` checks the fingerprint and the policy, plans the round's privacy spend and
writes it ahead in the ledger (refusing a round that would exceed the budget), trains with
randomness only the site knows, settles the ledger, and returns the updated arrays with numbers
only. ``evaluate_round`` scores the global adapter on a split the site's policy allows, as often
as the policy allows, and discloses only groups large enough and rounded scores.

Anything a site will not do is a :class:`~client.refusal.SiteRefusal` with a fixed code.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from client.disclosure import disclose_scores, evaluation_subset, round_count
from client.journal import JournalError, MissingJournalError
from client.policy import RoundRequest, apply_policy
from client.privacy import LedgerUnitError, Reservation, plan_round
from client.privacy.accounting import Mechanism
from client.privacy.answer_prior import RELEASE_STAGE, count_release, release_answer_counts
from client.privacy.budget import RoundPlan, epsilon_curve
from client.refusal import SiteRefusal
from client.site import Site
from client.trainer import TrainConfig, steps_for_epochs
from protocol import Refusal
from shared_model.device import checkpointing_enabled
from shared_model.evaluation import evaluate_samples
from shared_model.inference import Answerer
from shared_model.sample import Sample


@dataclass
class RoundReply:
    """What a site sends back: arrays (absent for an evaluation), numbers, clamped keys."""

    arrays: dict[str, np.ndarray] | None
    metrics: dict[str, float]
    clamped: tuple[str, ...] = ()


def check_fingerprint(site: Site, fingerprint: str) -> None:
    """Refuse messages for another base checkpoint or adapter layout."""
    if fingerprint != site.fingerprint:
        raise SiteRefusal(
            Refusal.FINGERPRINT,
            f"server fingerprint {fingerprint!r} differs from the site's {site.fingerprint!r}",
        )


def request_from_config(config: Mapping[str, Any]) -> RoundRequest:
    """The round's training request from the server's config record."""
    with _malformed_config():
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
    with _malformed_config():
        fingerprint, server_round = str(config["fingerprint"]), int(config["server-round"])
        run_id, rounds_left = str(config.get("run-id", "")), int(config.get("rounds-left", 1))
        physical_batch_size = max(1, int(config.get("physical-batch-size", 16)))
    check_fingerprint(site, fingerprint)
    policy = site.config.policy
    decision = apply_policy(request_from_config(config), policy)
    for detail in decision.details:
        site.log.info("round %s: %s", server_round, detail)
    request = decision.request
    with journal_refusals(Refusal.LEDGER_MISSING, Refusal.LEDGER_DAMAGED):
        site.ledger.entries()  # refuse before reading the archive when the ledger is unusable
    samples = site.samples("train", request.stage)
    if not samples:
        raise SiteRefusal(Refusal.NO_RECORDS, f"no usable {request.stage} training records")
    trainer = site.trainer(request.stage, align_arrays)
    samples = site.encodable(trainer, samples)
    if not samples:
        raise SiteRefusal(
            Refusal.NO_RECORDS, f"no {request.stage} training record the model can take"
        )
    unit_keys = site.unit_keys(samples)
    sample_rate = min(1.0, request.batch_size / len(set(unit_keys)))
    steps = _steps(request, sample_rate, policy.max_local_epochs)
    weights = balanced_weights(
        site, samples, unit_keys, request, run_id=run_id, server_round=server_round
    )
    history, reservation = reserve_round(
        site, request, sample_rate, steps, run_id=run_id, server_round=server_round,
        rounds_left=rounds_left,
    )  # fmt: skip
    mechanism = reservation.mechanism
    with _layout_refusal():
        trainer.adapter.load_arrays(arrays, site.fingerprint)
    train_config = TrainConfig(
        steps=steps,
        sample_rate=sample_rate,
        learning_rate=request.learning_rate,
        dp=request.dp,
        noise_multiplier=mechanism.noise_multiplier,
        max_grad_norm=request.max_grad_norm,
        physical_batch_size=physical_batch_size,
        token_budget=site.config.token_budget,
        gradient_checkpointing=checkpointing_enabled(
            site.device, site.config.gradient_checkpointing
        ),
        precision=site.config.precision,
        proximal_mu=request.proximal_mu,
        control_weight=site.config.contrast.weight if site.config.contrast else 0.0,
    )
    subspace = site.public_subspace(trainer, train_config) if request.dp else None
    if subspace is not None:
        site.log.info(
            "round %s: clipping and noise in %d directions of public records' gradients",
            server_round,
            subspace.dimension,
        )
    result = trainer.train(
        samples,
        unit_keys,
        train_config,
        randomness=site.randomness(request.stage, server_round),
        epsilon_at=epsilon_curve(history, mechanism, delta=policy.delta) if request.dp else None,
        subspace=subspace,
        record_weights=weights,
        controls=site.controls(samples, request.stage),
        progress=site.progress,
    )
    with journal_refusals(Refusal.LEDGER_MISSING, Refusal.LEDGER_DAMAGED):
        epsilon = site.ledger.settle(reservation, steps=result.steps, delta=policy.delta)
    metrics = {
        "num-examples": max(round_count(result.num_examples, policy), 1.0),
        "steps": float(result.steps),
        "seconds": float(round(result.seconds)),
        "epsilon": float(epsilon),
        "delta": policy.delta,
        "noise-multiplier": mechanism.noise_multiplier,
    }
    if policy.send_train_loss:
        metrics["train-loss"] = round(result.loss, policy.score_decimals)
    return RoundReply(result.arrays, metrics, decision.clamped)


def reserve_round(
    site: Site,
    request: RoundRequest,
    sample_rate: float,
    steps: int,
    *,
    run_id: str,
    server_round: int,
    rounds_left: int,
) -> tuple[list[Mechanism], Reservation]:
    """Plan the round against the ledger and write it ahead, atomically; return the history it
    was planned on and the reservation, or raise the budget refusal."""
    return _reserve(
        site,
        Mechanism(request.noise_multiplier, sample_rate, steps),
        dp=request.dp,
        stage=request.stage,
        max_grad_norm=request.max_grad_norm,
        run_id=run_id,
        server_round=server_round,
        rounds_left=rounds_left,
    )


def balanced_weights(
    site: Site,
    samples: list[Sample],
    unit_keys: list[str],
    request: RoundRequest,
    *,
    run_id: str,
    server_round: int,
) -> list[float] | None:
    """Each sample's weight where the policy balances closed answers in ``instruct``
    (``balance_answers``), else ``None``. The counts are released once a run, written ahead in
    the ledger like a round, and kept in the site's work folder: under DP in a DP round, exact
    (and recorded as a release without DP) in a round without it."""
    policy = site.config.policy
    if not policy.balance_answers or request.stage != "instruct":
        return None
    counts = site.answer_counts.get(run_id)
    if counts is None:
        noise = policy.answer_count_noise if request.dp else 0.0
        _, reservation = _reserve(
            site,
            count_release(noise),
            dp=request.dp,
            stage=RELEASE_STAGE,
            max_grad_norm=1.0,
            run_id=run_id,
            server_round=server_round,
            rounds_left=1,
        )
        counts = release_answer_counts(
            samples, unit_keys, noise, site.randomness(RELEASE_STAGE, server_round)
        )
        site.answer_counts.put(run_id, counts)
        with journal_refusals(Refusal.LEDGER_MISSING, Refusal.LEDGER_DAMAGED):
            epsilon = site.ledger.settle(reservation, steps=1, delta=policy.delta)
        site.log.info(
            "round %s: closed answers' counts released (noise %g, epsilon now %.3f)",
            server_round,
            noise,
            epsilon,
        )
    return counts.weights(samples)


def _reserve(
    site: Site,
    mechanism: Mechanism,
    *,
    dp: bool,
    stage: str,
    max_grad_norm: float,
    run_id: str,
    server_round: int,
    rounds_left: int,
) -> tuple[list[Mechanism], Reservation]:
    """Plan ``mechanism`` (sigma 0: the site calibrates it) against the ledger and write it
    ahead, atomically; return the history it was planned on and the reservation, or raise the
    budget refusal."""
    plans: list[tuple[list[Mechanism], RoundPlan]] = []
    policy = site.config.policy

    def plan(history: list[Mechanism]) -> Mechanism | None:
        planned = plan_round(
            history,
            policy,
            dp=dp,
            sample_rate=mechanism.sample_rate,
            steps=mechanism.steps,
            noise_multiplier=mechanism.noise_multiplier,
            rounds_left=rounds_left,
            accountant=site.ledger.accountant,
        )
        plans.append((history, planned))
        return planned.mechanism if planned.allowed else None

    with journal_refusals(Refusal.LEDGER_MISSING, Refusal.LEDGER_DAMAGED):
        reservation = site.ledger.reserve(
            plan,
            run_id=run_id,
            stage=stage,
            server_round=server_round,
            max_grad_norm=max_grad_norm,
            delta=policy.delta,
            privacy_unit=policy.privacy_unit,
        )
    history, planned = plans[-1]
    if reservation is None:
        raise SiteRefusal(planned.refusal, planned.detail)
    return history, reservation


def evaluate_round(
    site: Site,
    arrays: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    align_arrays: Mapping[str, np.ndarray] | None = None,
) -> RoundReply:
    """Score the global adapter on a split the policy allows; disclose what the policy allows."""
    with _malformed_config():
        fingerprint, stage = str(config["fingerprint"]), str(config["stage"])
        split, run_id = str(config.get("split", "val")), str(config.get("run-id", ""))
    check_fingerprint(site, fingerprint)
    policy = site.config.policy
    if stage not in policy.stages:
        raise SiteRefusal(Refusal.POLICY_STAGE, f"stage {stage!r} is not allowed here")
    if split not in policy.eval_splits:
        raise SiteRefusal(
            Refusal.POLICY_SPLIT, f"evaluation on {split!r} asked; allowed: {policy.eval_splits}"
        )
    with journal_refusals(Refusal.AUDIT_LOG, Refusal.AUDIT_LOG):
        answered = site.audit.evaluations(run_id)
    if (
        answered.in_run >= policy.max_evaluations_per_run
        or answered.total >= policy.max_evaluations
    ):
        raise SiteRefusal(
            Refusal.POLICY_EVALUATION_CAP,
            f"{answered.in_run} evaluations in run {run_id!r} (cap "
            f"{policy.max_evaluations_per_run}), {answered.total} in all (cap "
            f"{policy.max_evaluations})",
        )
    samples = evaluation_subset(site.samples(split, stage), policy.max_eval_records)
    if not samples:
        raise SiteRefusal(Refusal.NO_RECORDS, f"no usable {stage} records in split {split!r}")
    trainer = site.trainer(stage, align_arrays)
    with _layout_refusal():
        trainer.adapter.load_arrays(arrays, site.fingerprint)
    answerer = Answerer(trainer.adapter.model, trainer.processor, site.spec.canvas)
    metrics = disclose_scores(evaluate_samples(answerer, samples), policy)
    metrics["num-examples"] = round_count(len(samples), policy)
    return RoundReply(None, metrics)


@contextlib.contextmanager
def journal_refusals(missing: Refusal, damaged: Refusal) -> Iterator[None]:
    """Turn an unusable ledger or audit log into the refusal that says so."""
    try:
        yield
    except LedgerUnitError as error:
        raise SiteRefusal(Refusal.LEDGER_UNIT, str(error)) from error
    except MissingJournalError as error:
        raise SiteRefusal(missing, str(error)) from error
    except JournalError as error:
        raise SiteRefusal(damaged, str(error)) from error


@contextlib.contextmanager
def _malformed_config() -> Iterator[None]:
    try:
        yield
    except (KeyError, TypeError, ValueError) as error:
        raise SiteRefusal(Refusal.BAD_REQUEST, f"config: {error!r}") from error


@contextlib.contextmanager
def _layout_refusal() -> Iterator[None]:
    try:
        yield
    except ValueError as error:
        raise SiteRefusal(Refusal.ARRAY_LAYOUT, str(error)) from error


def _steps(request: RoundRequest, sample_rate: float, max_epochs: float) -> int:
    """Requested steps (epochs win), capped so no unit is visited more than ``max_epochs``."""
    if request.local_epochs > 0:
        steps = steps_for_epochs(request.local_epochs, sample_rate)
    else:
        steps = request.local_steps
    return max(1, min(steps, math.floor(max_epochs / sample_rate)))
