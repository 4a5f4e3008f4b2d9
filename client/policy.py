"""What a server asks of a site, checked against the site's policy: clamped or refused.

A site never trains a stage it has not agreed to, without DP when it requires DP, or beyond its
caps on local epochs, batch size and learning rate. The names of clamped keys are reported back;
refusals (a :class:`~client.refusal.SiteRefusal` with its code) stop the round at this site
before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from client.config import STAGES, Policy
from client.refusal import SiteRefusal
from protocol import Refusal


@dataclass(frozen=True)
class RoundRequest:
    """The training a server asks for in one round."""

    stage: str
    local_steps: int
    local_epochs: float
    learning_rate: float
    batch_size: int
    dp: bool
    noise_multiplier: float
    max_grad_norm: float
    proximal_mu: float = 0.0


@dataclass(frozen=True)
class PolicyDecision:
    """The request as the site will run it, and what was clamped.

    ``clamped`` names the request keys (``batch-size``, ...) that the server is told were
    clamped; ``details`` says from what to what, for the site's own log.
    """

    request: RoundRequest
    clamped: tuple[str, ...] = ()
    details: tuple[str, ...] = ()


def apply_policy(request: RoundRequest, policy: Policy) -> PolicyDecision:
    """Clamp ``request`` to ``policy``; raise :class:`SiteRefusal` when it cannot run at all."""
    if request.stage not in STAGES:
        raise SiteRefusal(Refusal.UNKNOWN_STAGE, f"stage {request.stage!r} is not one of {STAGES}")
    if request.stage not in policy.stages:
        raise SiteRefusal(Refusal.POLICY_STAGE, f"stage {request.stage!r} is not allowed here")
    if policy.require_dp and not request.dp:
        raise SiteRefusal(Refusal.POLICY_REQUIRES_DP, "a round without DP was requested")
    clamped, details, changes = [], [], {}
    caps = (
        ("local_epochs", policy.max_local_epochs),
        ("batch_size", policy.max_batch_size),
        ("learning_rate", policy.max_learning_rate),
    )
    for field, cap in caps:
        value = getattr(request, field)
        if value > cap:
            key = field.replace("_", "-")
            changes[field] = type(value)(cap)
            clamped.append(key)
            details.append(f"{key} {value} clamped to {cap}")
    return PolicyDecision(replace(request, **changes), tuple(clamped), tuple(details))
