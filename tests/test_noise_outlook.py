"""The forecast a simulated run prints before it trains, and the parameter count it rests on."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from client.privacy.forecast import forecast
from shared_model.full_shape import FullShape, full_shape_config, full_shape_spec
from shared_model.loading import stage_model, stage_parameter_count
from simulations.noise_outlook import (
    SIGNAL_SHARE,
    outlook_line,
    schedule_forecast,
    training_units,
)
from simulations.synthetic import HospitalProfile, write_hospital


def _schedule(**changes) -> argparse.Namespace:
    schedule = dict(
        epsilon=8.0,
        delta=1e-5,
        align_rounds=1,
        align_steps=15,
        instruct_rounds=3,
        instruct_steps=15,
        instruct_batch=96,
    )
    return argparse.Namespace(**{**schedule, **changes})


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    profile = HospitalProfile("hospital-x", 40, 0.5, 0.3, (0.25,) * 4, seed=3)
    return write_hospital(tmp_path_factory.mktemp("outlook") / "hospital-x", profile)


def test_training_units_are_the_patients_with_training_records(hospital: Path) -> None:
    lines = (hospital / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    train = {r["patient_id"] for r in records if r["split"] == "train"}
    assert 0 < len(train) < len({r["patient_id"] for r in records})  # other splits left out
    assert training_units(hospital) == len(train)


def test_the_forecast_is_plans_for_the_runs_steps_and_noised_dimensions(
    hospital: Path, tiny_spec
) -> None:
    units = training_units(hospital)
    args = _schedule()
    in_subspace = schedule_forecast(args, [hospital, hospital], tiny_spec, {"directions": 128})
    expected = forecast([units, units], batch=96, steps=60, dimensions=128, epsilon=8, delta=1e-5)
    assert in_subspace == expected
    everywhere = schedule_forecast(args, [hospital], tiny_spec, None)
    assert everywhere.dimensions == stage_parameter_count(tiny_spec, "instruct")
    assert everywhere.steps == 60


def test_the_line_says_whether_a_tenth_of_the_clip_clears_the_noise() -> None:
    small = forecast([94] * 3, batch=96, steps=60, dimensions=35_840, epsilon=8, delta=1e-5)
    line = outlook_line(small)  # VQA-RAD's hospitals
    assert small.signal_to_noise(SIGNAL_SHARE) < 1 and "below it" in line
    assert "sigma 4.94/4.94/4.94" in line and "35,840 dimensions" in line
    large = forecast([300, 400, 520], batch=96, steps=60, dimensions=128, epsilon=8, delta=1e-5)
    assert large.signal_to_noise(SIGNAL_SHARE) > 1 and "above it" in outlook_line(large)


def test_stage_parameters_are_counted_without_reading_weights(tiny_spec) -> None:
    for stage in ("align", "instruct"):
        adapter, _ = stage_model(tiny_spec, stage)
        trained = sum(p.numel() for _, p in adapter.trainable_parameters())
        assert stage_parameter_count(tiny_spec, stage) == trained


def test_stage_parameters_of_qwen2_vl_2b_from_its_config_alone(
    tmp_path: Path, tiny_base: Path
) -> None:
    """At Qwen2-VL-2B's shape, from a directory that holds its config and no weights: rank-16
    LoRA on every language-model projection and on the merger's two layers."""
    shape = FullShape()
    full_shape_config(shape, AutoTokenizer.from_pretrained(tiny_base)).save_pretrained(tmp_path)
    rank, hidden = 16, shape.text_hidden
    kv = shape.text_kv_heads * hidden // shape.text_heads  # the k and v projections' width
    per_layer = (
        2 * (hidden + hidden)  # q, o
        + 2 * (hidden + kv)  # k, v
        + 3 * (hidden + shape.text_intermediate)  # gate, up, down
    )
    merged = shape.vision_embed * shape.spatial_merge_size**2
    merger = (merged + merged) + (merged + hidden)
    expected = rank * (shape.text_layers * per_layer + merger)
    assert stage_parameter_count(full_shape_spec(tmp_path), "instruct") == expected
