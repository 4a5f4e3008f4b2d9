"""``fedumit plan``: each site's sigma from the real accountant, the noise a step's mean gradient
carries, and what the federation's mean leaves of it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from client.privacy import epsilon_for
from client.privacy.forecast import forecast
from fedumit.cli import main


def test_each_sites_sigma_spends_its_budget_and_no_more() -> None:
    result = forecast([400, 300, 520], batch=96, steps=60, dimensions=128, epsilon=8, delta=1e-5)
    for site in result.sites:
        assert site.sample_rate == pytest.approx(96 / site.patients)
        spent = epsilon_for([(site.noise_multiplier, site.sample_rate, 60)], delta=1e-5)
        assert 8 - 0.01 <= spent <= 8
    # a smaller hospital samples each patient more often, so it needs more noise
    sigmas = {site.patients: site.noise_multiplier for site in result.sites}
    assert sigmas[300] > sigmas[400] > sigmas[520]


def test_noise_norm_is_the_norm_a_noisy_mean_step_carries() -> None:
    patients, batch, dimensions = 200, 50, 4096
    site = forecast(
        [patients], batch=batch, steps=30, dimensions=dimensions, epsilon=8, delta=1e-5
    ).sites[0]
    # what a DP-SGD step adds to the mean of its clipped gradients, in clipping norms
    noise_sums = np.random.default_rng(0).normal(0.0, site.noise_multiplier, (64, dimensions))
    steps = noise_sums / (site.sample_rate * patients)
    assert np.linalg.norm(steps, axis=1).mean() == pytest.approx(site.noise_norm, rel=0.02)


def test_the_federations_mean_averages_the_sites_independent_noise() -> None:
    one = forecast([500], batch=100, steps=40, dimensions=1000, epsilon=8, delta=1e-5)
    three = forecast([500] * 3, batch=100, steps=40, dimensions=1000, epsilon=8, delta=1e-5)
    assert three.sites[0].noise_norm == pytest.approx(one.sites[0].noise_norm)
    assert three.noise_norm == pytest.approx(one.noise_norm / math.sqrt(3))
    # a consistent signal of 0.05 clipping norms reaches that noise after steps_to_match steps
    needed = three.steps_to_match(0.05)
    assert 0.05 * math.sqrt(needed) == pytest.approx(three.noise_norm * 1.0)
    assert three.signal_to_noise(0.05) == pytest.approx(math.sqrt(40 / needed))


def test_a_batch_larger_than_the_site_draws_every_patient_every_step() -> None:
    site = forecast([94], batch=96, steps=60, dimensions=36_000, epsilon=8, delta=1e-5).sites[0]
    assert site.sample_rate == 1.0
    # VQA-RAD's hospitals: about ten clipping norms of noise on every step's mean gradient
    assert 9 < site.noise_norm < 11


@pytest.mark.parametrize(
    ("patients", "batch", "steps", "dimensions"),
    [([0], 10, 5, 10), ([], 10, 5, 10), ([50], 0, 5, 10), ([50], 10, 0, 10), ([50], 10, 5, 0)],
)
def test_an_impossible_schedule_is_named(patients, batch, steps, dimensions) -> None:
    with pytest.raises(ValueError):
        forecast(patients, batch=batch, steps=steps, dimensions=dimensions, epsilon=8, delta=1e-5)


def test_plan_prints_json_for_every_site_and_the_federation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["plan", "--patients", "94", "94", "94", "--batch", "96", "--steps", "60"]
    assert main([*argv, "--dimensions", "36000", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [site["patients"] for site in printed["sites"]] == [94, 94, 94]
    federation = printed["federation"]
    assert federation["signal_to_noise_at_clip"] == pytest.approx(
        math.sqrt(60) / federation["noise_norm"]
    )
    assert federation["steps_to_match"] > 60  # nothing of a tenth of the clip is learned
    assert main([*argv, "--subspace", "128"]) == 0
    table = capsys.readouterr().out
    assert "federation" in table and "noise in 128 dimensions" in table and "epsilon 8 " in table


def test_plan_refuses_a_signal_outside_the_clipping_norm(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["plan", "--patients", "100", "--batch", "10", "--steps", "5", "--subspace", "8"]
    with pytest.raises(SystemExit, match="--signal"):
        main([*argv, "--signal", "2"])
    with pytest.raises(SystemExit, match="too small"):
        main([*argv, "--epsilon", "1e-4"])


def test_plan_counts_a_stages_trainable_parameters(
    tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared_model.loading import stage_model
    from shared_model.spec import ModelSpec
    from shared_model.tiny import SPEC_FILE

    spec_file = tiny_base / SPEC_FILE
    argv = ["plan", "--patients", "300", "--batch", "30", "--steps", "20", "--json"]
    for stage in ("align", "instruct"):
        assert main([*argv, "--model-spec", str(spec_file), "--stage", stage]) == 0
        adapter, _ = stage_model(ModelSpec.from_toml(spec_file), stage)
        trained = [p.numel() for p in adapter.model.parameters() if p.requires_grad]
        assert json.loads(capsys.readouterr().out)["dimensions"] == sum(trained)
