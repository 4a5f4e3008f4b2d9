"""The schedule ``fedumit simulate`` and ``fedumit compare`` run when a flag is not given."""

from __future__ import annotations

import pytest

from fedumit.cli import build_parser
from simulations.defaults import (
    DATASET_DEFAULTS,
    SIMULATION_DEFAULTS,
    fill_schedule_defaults,
    learning_rate,
)

PNEUMONIA = DATASET_DEFAULTS["pneumoniamnist"]


def parsed(*argv: str, command: str = "simulate"):
    return fill_schedule_defaults(build_parser().parse_args([command, *argv]))


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_a_dataset_with_its_own_schedule_gets_it_and_the_rest_the_synthetic_one(command) -> None:
    args = parsed("--dataset", "pneumoniamnist", command=command)
    assert (
        args.instruct_rounds
        == PNEUMONIA["instruct.rounds"]
        != SIMULATION_DEFAULTS["instruct.rounds"]
    )
    assert args.align_rounds == SIMULATION_DEFAULTS["align.rounds"]
    assert args.max_grad_norm == SIMULATION_DEFAULTS["max-grad-norm"]
    assert parsed(command=command).instruct_rounds == SIMULATION_DEFAULTS["instruct.rounds"]


def test_a_datasets_dp_learning_rate_is_for_runs_with_dp_only() -> None:
    pneumonia, synthetic = parsed("--dataset", "pneumoniamnist"), parsed()
    assert learning_rate(pneumonia, "instruct", dp=True) == PNEUMONIA["instruct.dp-lr"]
    assert learning_rate(pneumonia, "instruct", dp=False) == SIMULATION_DEFAULTS["instruct.lr"]
    assert learning_rate(pneumonia, "align", dp=True) == SIMULATION_DEFAULTS["align.lr"]
    for dp in (True, False):
        assert learning_rate(synthetic, "instruct", dp) == SIMULATION_DEFAULTS["instruct.lr"]


def test_a_flag_wins_over_the_datasets_default() -> None:
    args = parsed("--dataset", "pneumoniamnist", "--instruct-lr", "5e-3", "--instruct-rounds", "2")
    assert args.instruct_rounds == 2
    assert (
        learning_rate(args, "instruct", dp=True)
        == learning_rate(args, "instruct", dp=False)
        == 5e-3
    )


def test_the_held_out_sample_size_is_not_a_schedule_option() -> None:
    assert parsed("--dataset", "pneumoniamnist").test_per_group is None
