"""``benchmarks/readout_probe.py``: a DP readout of the answer position through a fixed map."""

from __future__ import annotations

import argparse
import dataclasses
from types import ModuleType

import numpy as np
import pytest
import torch

from client.privacy.contrast import CONTROL_PREFIX
from shared_model.sample import Sample
from tests.conftest import load_benchmark, side_records


@pytest.fixture(scope="module")
def readout_probe() -> ModuleType:
    return load_benchmark("readout_probe.py")


def hidden_states(generator: torch.Generator, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """States like the tiny base's at the answer position: a large shared direction (norm 14)
    and a class signal a tenth of it, one record in ten of class 0."""
    labels = (torch.rand(count, generator=generator) > 0.1).long()
    states = 0.3 * torch.randn(count, 16, generator=generator)
    states[:, 0] += 14.0
    states[:, 1] += 1.2 * (2 * labels - 1)
    return states, labels


def test_the_maps_remove_the_shared_direction_and_whiten_the_rest(readout_probe) -> None:
    generator = torch.Generator().manual_seed(0)
    states, _ = hidden_states(generator, 2000)
    direction = states.mean(0) / states.mean(0).norm()
    assert torch.equal(readout_probe.input_map(states, "raw"), torch.eye(16))
    for kind in ("projected", "whitened"):
        mapping = readout_probe.input_map(states, kind)
        assert (mapping @ direction).norm() < 1e-4
    whitened = states @ readout_probe.input_map(states, "whitened").T
    covariance = torch.cov(whitened.T)
    kept = torch.linalg.eigvalsh(covariance)[1:]  # the removed direction's is 0
    assert torch.allclose(kept, torch.ones(15), atol=0.05)


def test_under_dp_noise_only_the_whitened_readout_learns_the_minority_class(readout_probe) -> None:
    generator = torch.Generator().manual_seed(1)
    train, train_labels = hidden_states(generator, 3000)
    test, test_labels = hidden_states(generator, 1000)
    rows = torch.zeros(2, 16)
    args = argparse.Namespace(seed=0, steps=60, batch=300, sigma=1.0, lr=3e-2)
    balanced = {}
    for kind in ("raw", "whitened"):
        mapping = readout_probe.input_map(train, kind)
        trained = readout_probe.train_readout(train, train_labels, rows, mapping, args)
        logits = (test @ trained.T).numpy()
        balanced[kind] = readout_probe.scores(logits, test_labels.numpy())["balanced_accuracy"]
    assert balanced["whitened"] > 0.8
    assert balanced["raw"] < 0.6


def test_public_stand_ins_keep_the_prompt_and_cycle_through_images_of_the_same_shape(
    readout_probe,
) -> None:
    template = side_records()
    public = [*side_records(("right", "left")), *volume_records()]
    stand_ins = readout_probe.public_stand_ins(public, template, count=3)
    assert len(stand_ins) == 3
    for stand_in, record, image in zip(stand_ins, template, [*public[:2], public[0]], strict=False):
        assert stand_in.fields == record.fields and stand_in.task == record.task
        assert np.array_equal(stand_in.images[0], image.images[0])
        assert stand_in.record_id.startswith(CONTROL_PREFIX)


def volume_records() -> list[Sample]:
    """Two records whose one image is a volume (a shape no 2D template shares)."""
    records = side_records(("left", "right"))
    return [
        Sample(**{**vars(r), "images": (np.zeros((4, *r.images[0].shape), np.uint8),)})
        for r in records
    ]


def test_options_whose_answers_start_alike_are_refused(readout_probe, tiny_spec) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_spec.base)
    record = side_records()[0]
    firsts = readout_probe.first_answer_tokens(tokenizer, record, 2)
    assert len(set(firsts)) == 2
    options = [f"finding {n}" for n in range(12)]  # options 1 and 10 start with the same digit
    many = dataclasses.replace(record, fields={**record.fields, "options": options, "label": 0})
    with pytest.raises(ValueError, match="share their first token"):
        readout_probe.first_answer_tokens(tokenizer, many, 12)
