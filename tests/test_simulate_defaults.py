"""The schedule ``fedumit simulate`` and ``fedumit compare`` run when a flag is not given."""

from __future__ import annotations

import pytest

from fedumit.cli import build_parser
from simulations.defaults import DATASET_DEFAULTS, SIMULATION_DEFAULTS, fill_schedule_defaults


def parsed(*argv: str):
    return fill_schedule_defaults(build_parser().parse_args(["simulate", *argv]))


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_a_dataset_with_its_own_schedule_gets_it_and_the_rest_the_synthetic_one(command) -> None:
    args = fill_schedule_defaults(
        build_parser().parse_args([command, "--dataset", "pneumoniamnist"])
    )
    assert args.instruct_lr == DATASET_DEFAULTS["pneumoniamnist"]["instruct.lr"]
    assert args.instruct_rounds == DATASET_DEFAULTS["pneumoniamnist"]["instruct.rounds"]
    assert args.instruct_lr != SIMULATION_DEFAULTS["instruct.lr"]
    assert args.align_lr == SIMULATION_DEFAULTS["align.lr"]
    assert args.max_grad_norm == SIMULATION_DEFAULTS["max-grad-norm"]
    synthetic = parsed()
    assert synthetic.instruct_lr == SIMULATION_DEFAULTS["instruct.lr"]
    assert synthetic.instruct_rounds == SIMULATION_DEFAULTS["instruct.rounds"]


def test_a_flag_wins_over_the_datasets_default() -> None:
    args = parsed("--dataset", "pneumoniamnist", "--instruct-lr", "5e-3", "--instruct-rounds", "2")
    assert (args.instruct_lr, args.instruct_rounds) == (5e-3, 2)


def test_the_held_out_sample_size_is_not_a_schedule_option() -> None:
    assert parsed("--dataset", "pneumoniamnist").test_per_group is None
