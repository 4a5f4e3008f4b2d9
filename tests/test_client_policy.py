"""A server request beyond the site's policy is clamped or refused, and says which."""

from __future__ import annotations

import pytest

from client.config import Policy
from client.policy import RoundRequest, apply_policy
from client.refusal import SiteRefusal
from protocol import Refusal

REQUEST = RoundRequest(
    stage="instruct",
    local_steps=10,
    local_epochs=5.0,
    learning_rate=0.5,
    batch_size=512,
    dp=True,
    noise_multiplier=1.0,
    max_grad_norm=1.0,
)


def test_within_policy_runs_unchanged() -> None:
    policy = Policy(max_local_epochs=10, max_batch_size=1024, max_learning_rate=1.0)
    decision = apply_policy(REQUEST, policy)
    assert decision.clamped == () and decision.request == REQUEST


def test_caps_are_clamped_and_reported() -> None:
    decision = apply_policy(
        REQUEST, Policy(max_local_epochs=2, max_batch_size=64, max_learning_rate=0.01)
    )
    assert decision.request.local_epochs == 2.0
    assert decision.request.batch_size == 64 and isinstance(decision.request.batch_size, int)
    assert decision.request.learning_rate == 0.01
    assert decision.clamped == ("local-epochs", "batch-size", "learning-rate")
    assert any("batch-size 512 clamped to 64" in d for d in decision.details)


def test_disallowed_stage_and_missing_dp_are_refused_with_their_codes() -> None:
    with pytest.raises(SiteRefusal) as refused:
        apply_policy(REQUEST, Policy(stages=("align",)))
    assert refused.value.code is Refusal.POLICY_STAGE
    no_dp = RoundRequest(**{**REQUEST.__dict__, "dp": False})
    with pytest.raises(SiteRefusal) as refused:
        apply_policy(no_dp, Policy())
    assert refused.value.code is Refusal.POLICY_REQUIRES_DP
    decision = apply_policy(
        no_dp, Policy(require_dp=False, max_local_epochs=9, max_batch_size=999, max_learning_rate=1)
    )
    assert decision.request == no_dp


def test_an_unknown_stage_is_refused_as_such() -> None:
    unknown = RoundRequest(**{**REQUEST.__dict__, "stage": "pretrain"})
    with pytest.raises(SiteRefusal) as refused:
        apply_policy(unknown, Policy(stages=("align", "instruct")))
    assert refused.value.code is Refusal.UNKNOWN_STAGE
