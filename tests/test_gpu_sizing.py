"""The GPU sizing of ``benchmarks/full_shape.py`` and the site's default token budget.

The budget is what keeps a hospital's 24 GB card from running out of memory when a CT series
and radiographs share a step, so it must stay within what the memory model, with its margin for
error, says fits for every sample kind.
"""

from __future__ import annotations

from types import ModuleType

import pytest

from client.config import DEFAULT_TOKEN_BUDGET
from tests.conftest import load_benchmark

ROW_CAP = 64  # the sizing's largest physical batch


@pytest.fixture(scope="module")
def full_shape_benchmark() -> ModuleType:
    return load_benchmark("full_shape.py")


def test_default_token_budget_fits_every_sample_kind_on_a_24gb_card(full_shape_benchmark) -> None:
    rows = full_shape_benchmark.gpu_sizing(24.0)
    assert {row["stage"] for row in rows} == {"align", "instruct"}
    for row in rows:
        assert row["fits"] and row["gpu_gib"] <= 24.0, row
        tokens_per_record = row["tokens_per_batch"] // row["physical_batch"]
        packed = min(ROW_CAP, DEFAULT_TOKEN_BUDGET // tokens_per_record)
        assert packed <= row["physical_batch"], (row, packed)


def test_margin_scales_the_step_terms_only(full_shape_benchmark) -> None:
    margin = full_shape_benchmark.STEP_MARGIN
    terms = {"weights": 10.0, "trainable": 2.0, "logits": 5.0, "per_sample": 3.0, "total": 20.0}
    scaled = full_shape_benchmark.with_margin(terms)
    assert scaled["weights"] == 10.0 and scaled["trainable"] == 2.0
    assert scaled["logits"] == pytest.approx(5.0 * margin)
    assert scaled["total"] == pytest.approx(12.0 + 8.0 * margin)
