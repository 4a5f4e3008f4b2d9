"""``benchmarks/linear_probe.py``: probes that find what their features hold, at every point."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import torch

from shared_model.inference import load_answerer
from shared_model.inputs import collate, encode_sample
from tests.conftest import load_benchmark, side_records


@pytest.fixture(scope="module")
def linear_probe() -> ModuleType:
    return load_benchmark("linear_probe.py")


def blobs(generator: torch.Generator, count: int, separation: float):
    labels = torch.arange(count) % 2
    features = torch.randn(count, 6, generator=generator)
    features[:, 2] += separation * labels
    return features, labels


def test_a_probe_finds_a_separating_direction_and_nothing_in_noise(linear_probe) -> None:
    generator = torch.Generator().manual_seed(0)
    for separation, lowest, highest in ((4.0, 0.95, 1.0), (0.0, 0.0, 0.65)):
        splits = {split: blobs(generator, 300, separation) for split in ("train", "val", "test")}
        result = linear_probe.probe(
            {split: found for split, (found, _) in splits.items()},
            {split: labels for split, (_, labels) in splits.items()},
            classes=2,
        )
        assert result["l2"] in linear_probe.L2_GRID
        assert lowest <= result["test"]["auc"] <= highest
        assert lowest <= result["test"]["balanced_accuracy"] <= highest


def test_one_answer_for_every_record_scores_chance_whatever_the_class_shares(linear_probe) -> None:
    labels = np.array([1, 1, 1, 0])
    constant = np.tile([0.0, 1.0], (4, 1))
    scores = linear_probe.scores(constant, labels)
    assert scores == {"accuracy": 0.75, "balanced_accuracy": 0.5, "auc": 0.5}


def test_features_are_read_where_the_answer_is_written_whatever_the_padding(
    linear_probe, tiny_base, tiny_spec
) -> None:
    answerer = load_answerer(tiny_base, tiny_spec.canvas, device="cpu")
    model, processor = answerer.model, answerer.processor
    samples = side_records()
    samples[1].fields["question"] = "Which side is the bright lesion on, left or right?"
    together = linear_probe.features(model, processor, tiny_spec, samples)
    layers = model.config.text_config.num_hidden_layers
    assert set(together) == {
        "pixels",
        "visual tokens",
        *(f"layer {n}" for n in range(1, layers + 1)),
    }
    assert all(len(rows) == len(samples) for rows in together.values())
    assert together["pixels"].shape[1] == samples[0].images[0][..., 0].size
    assert together["visual tokens"].shape[1] % model.config.text_config.hidden_size == 0
    for position, sample in enumerate(samples):  # alone: no padding at all
        alone = linear_probe.features(model, processor, tiny_spec, [sample])
        for name in together:
            torch.testing.assert_close(together[name][position], alone[name][0], atol=1e-4, rtol=0)
    assert not torch.allclose(together["layer 1"][0], together["layer 1"][1])


def test_the_last_layers_feature_is_what_writes_the_answers_first_token(
    linear_probe, tiny_base, tiny_spec
) -> None:
    answerer = load_answerer(tiny_base, tiny_spec.canvas, device="cpu")
    model, processor = answerer.model, answerer.processor
    sample = side_records()[0]
    encoded = encode_sample(processor, sample, tiny_spec)
    first_answer_token = int(torch.nonzero(encoded.labels != -100)[0])
    inputs = collate([encoded], processor.tokenizer.pad_token_id).inputs
    inputs.pop("labels")
    with torch.no_grad():
        logits = model(**inputs).logits[0, first_answer_token - 1]
        last = linear_probe.features(model, processor, tiny_spec, [sample])
        layers = model.config.text_config.num_hidden_layers
        from_feature = model.lm_head(last[f"layer {layers}"][0])
    torch.testing.assert_close(from_feature, logits, atol=1e-4, rtol=1e-4)
