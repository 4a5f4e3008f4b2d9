"""What a server asks of a site, checked against the site's policy: clamped or refused.

A site never trains a stage it has not agreed to, without DP when it requires DP, or beyond its
caps on local epochs, batch size and learning rate. Clamps are reported back (as a reason the
coordinator can read); refusals stop the round at this site before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from client.config import Policy


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
    """The request as the site will run it, what was clamped, and a refusal reason if any."""

    request: RoundRequest
    clamped: tuple[str, ...] = ()
    refusal: str = ""

    @property
    def refused(self) -> bool:
        """True when the site will not train this round."""
        return bool(self.refusal)


def apply_policy(request: RoundRequest, policy: Policy) -> PolicyDecision:
    """Clamp ``request`` to ``policy``, or refuse it with the reason."""
    if request.stage not in policy.stages:
        return PolicyDecision(request, refusal=f"stage {request.stage!r} is not allowed here")
    if policy.require_dp and not request.dp:
        return PolicyDecision(request, refusal="this site only trains with differential privacy")
    clamped = []
    changes = {}
    caps = (
        ("local_epochs", policy.max_local_epochs),
        ("batch_size", policy.max_batch_size),
        ("learning_rate", policy.max_learning_rate),
    )
    for field, cap in caps:
        value = getattr(request, field)
        if value > cap:
            changes[field] = type(value)(cap)
            clamped.append(f"{field.replace('_', '-')} {value} clamped to {cap}")
    return PolicyDecision(replace(request, **changes), tuple(clamped))
