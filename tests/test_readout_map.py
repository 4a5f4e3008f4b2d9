"""Output rows trained through a fixed map (:mod:`shared_model.readout_map`): the map, an
exact DP step through it against brute force, and plain rows before and after."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

from shared_model.adapters import StageAdapter
from shared_model.answer_rows import ROWS_MARKER
from shared_model.loading import load_base
from shared_model.readout_map import rows_parameter, rows_through, whitening_map
from shared_model.tiny import TINY_ANSWER_VOCABULARY
from tests.conftest import side_records
from tests.test_dp_exact import (
    CLIP,
    EXACT_STEP,
    _double_copy,
    instruct_trainer,
    site_samples,
    unit_gradients_brute_force,
)


@pytest.fixture
def rows_spec(tiny_spec):
    return replace(
        tiny_spec, instruct=replace(tiny_spec.instruct, answer_vocabulary=TINY_ANSWER_VOCABULARY)
    )


def test_the_whitening_map_removes_the_mean_direction_and_whitens_the_rest() -> None:
    generator = torch.Generator().manual_seed(0)
    scales = torch.linspace(0.1, 2.0, 8)
    states = torch.randn(4000, 8, generator=generator) * scales + 14.0 * torch.eye(8)[0]
    mapping = whitening_map(states)
    mean = states.mean(0)
    assert float((mapping @ mean).norm()) < 1e-3 * float(mean.norm())
    variances = torch.linalg.eigvalsh(torch.cov((states @ mapping.T).T))
    assert float(variances[0]) < 1e-4  # the removed direction
    torch.testing.assert_close(variances[1:], torch.ones(7), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="two hidden states"):
        whitening_map(states[:1])


def test_one_dp_step_through_a_map_matches_hand_computation(rows_spec) -> None:
    """Each unit's gradient of the stored rows is that of the plain rows times the map's
    transpose; it is clipped with the LoRA matrices; the rows that come back are
    ``R0 + (step) M``, and everything else moves as without a map."""
    torch.manual_seed(0)
    trainer = instruct_trainer(rows_spec, init_lora_weights=False)
    adapter, processor = trainer.adapter, trainer.processor
    samples, units = site_samples()
    examples = trainer.encode(samples)
    before = adapter.arrays()
    names = [n for n, _ in adapter.trainable_parameters()]
    (rows_name,) = [n for n in names if ROWS_MARKER in n]
    size = before[rows_name].shape[1]
    mapping = torch.randn(size, size, generator=torch.Generator().manual_seed(1)) / size**0.5

    unit_of = [int(u.split("-")[1]) for u in units]
    brute = unit_gradients_brute_force(
        _double_copy(adapter, rows_spec), examples, unit_of, processor.tokenizer.pad_token_id
    )
    position = names.index(rows_name)
    for grads in brute:
        grads[position] = grads[position] @ mapping.double().T
    factors = [min(1.0, CLIP / float(torch.cat([g.flatten() for g in gs]).norm())) for gs in brute]
    assert min(factors) < 1.0
    trainer.train(samples, units, EXACT_STEP, readout_map=mapping, progress=False)

    after = adapter.arrays()
    assert set(after) == set(before)
    for index, name in enumerate(names):
        step = sum(gs[index] * f for gs, f in zip(brute, factors, strict=True)) / 3.0
        step = -EXACT_STEP.learning_rate * step
        if name == rows_name:
            step = step @ mapping.double()
        expected = before[name] + step.float().numpy()
        np.testing.assert_allclose(after[name], expected, atol=1e-6, rtol=1e-4, err_msg=name)


def test_rows_are_plain_parameters_again_after_the_block(rows_spec) -> None:
    model, _ = load_base(rows_spec)
    adapter = StageAdapter.attach(model, rows_spec, "instruct")
    before = adapter.arrays()
    (rows_name,) = [n for n in before if ROWS_MARKER in n]
    size = before[rows_name].shape[1]
    (layer,) = [m for m in adapter.model.modules() if isinstance(m, TrainableTokensLayer)]
    with rows_through(adapter.model, 2 * torch.eye(size)):
        stored, mapping = rows_parameter(layer, "default")
        torch.testing.assert_close(mapping, 2 * torch.eye(size))
        with torch.no_grad():
            stored.add_(1.0)  # the rows move by (1) M = 2
    assert rows_parameter(layer, "default")[1] is None
    assert set(adapter.arrays()) == set(before)
    np.testing.assert_allclose(adapter.arrays()[rows_name], before[rows_name] + 2.0, rtol=1e-6)


def test_a_model_without_trained_rows_is_refused(tiny_spec) -> None:
    model, _ = load_base(tiny_spec)
    adapter = StageAdapter.attach(model, tiny_spec, "instruct")
    size = model.config.get_text_config().hidden_size
    with (
        pytest.raises(ValueError, match="no trainable output rows"),
        rows_through(adapter.model, torch.eye(size)),
    ):
        pass


def test_answer_states_are_read_where_each_answer_token_is_written(rows_spec) -> None:
    """One state per answer token, the one that predicts it: through ``lm_head`` the states
    give the model's own answer loss, whatever the batch's padding."""
    trainer = instruct_trainer(rows_spec)
    records = [*side_records(), *side_records(("right",))]
    encoded = trainer.encode(records)
    targets = torch.cat([e.labels[e.labels != -100] for e in encoded])
    alone = trainer.answer_states(records, batch=1)
    padded = trainer.answer_states(records, batch=3)
    hidden_size = trainer.adapter.model.config.get_text_config().hidden_size
    assert alone.shape == (len(targets), hidden_size)
    torch.testing.assert_close(padded, alone, atol=1e-4, rtol=1e-4)
    lm_head = trainer.adapter.model.get_output_embeddings()
    with torch.no_grad():
        token_loss = torch.nn.functional.cross_entropy(lm_head(alone), targets, reduction="sum")
        own = sum(float(trainer.answer_losses([e]) * (e.labels != -100).sum()) for e in encoded)
    assert float(token_loss) == pytest.approx(own, rel=1e-4)
