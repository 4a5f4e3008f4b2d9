"""DP-SGD is exact: per-unit clipped gradients and one step's update against brute force."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from client.privacy.per_unit import PerSampleGradients, clip_and_sum, sum_per_unit
from client.trainer import LocalTrainer, TrainConfig, parameter_groups
from shared_model.adapters import StageAdapter
from shared_model.answer_rows import ROWS_MARKER
from shared_model.inputs import collate, encode_example
from shared_model.loading import load_base
from shared_model.loss import answer_token_loss
from shared_model.sample import Geometry, Sample
from shared_model.tiny import TINY_ANSWER_VOCABULARY
from tests.conftest import lesion_image, lesion_volume

ROWS = [  # (unit, side, question, answer): several records per patient, mixed languages
    (0, "left", "Which side?", "left"),
    (1, "right", "哪一侧？", "右侧"),
    (0, "right", "Describe the image.", "a bright lesion on the right"),
    (2, "left", "Where is it?", "on the left side"),
    (1, "left", "病灶在哪里？", "左侧"),
]
CLIP = 0.05
EXACT_STEP = TrainConfig(
    steps=1,
    sample_rate=1.0,
    learning_rate=0.5,
    noise_multiplier=0.0,
    max_grad_norm=CLIP,
    optimizer="sgd",
    max_records_per_unit=8,  # every record of a unit, as the brute force takes them
    projector_lr_scale=1.0,  # one learning rate, as the hand computation uses
)
"""One noise-free SGD step that the hand computations of these tests take over the five rows
of three patients (``site_samples``)."""
PURE_NOISE_STEP = TrainConfig(
    steps=1,
    sample_rate=1e-9,  # rate ~0: an empty batch, the update is pure noise
    learning_rate=1.0,
    noise_multiplier=1.3,
    max_grad_norm=0.7,
    optimizer="sgd",
    projector_lr_scale=1.0,
)
PURE_NOISE_STD = 1.3 * 0.7 / (1e-9 * 3)
"""The standard deviation of the update's noise: ``sigma C / (q N)`` over three patients."""


def double_inputs(batch) -> tuple[dict, torch.Tensor]:
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in batch.inputs.items()}
    return inputs, inputs.pop("labels")


def unit_gradients_brute_force(adapter, examples, units, pad_id) -> list[list[torch.Tensor]]:
    parameters = [p for _, p in adapter.trainable_parameters()]
    result = []
    for unit in sorted(set(units)):
        rows = [e for e, u in zip(examples, units, strict=True) if u == unit]
        inputs, labels = double_inputs(collate(rows, pad_id))
        answer_token_loss(adapter.model(**inputs).logits, labels).sum().backward()
        result.append([p.grad.clone() for p in parameters])
        for p in parameters:
            p.grad = None
    return result


@pytest.mark.parametrize("stage", ["align", "instruct"])
@pytest.mark.parametrize("volume", [False, True], ids=["2d", "3d"])
def test_per_unit_clipped_gradients_match_brute_force(tiny_spec, stage, volume) -> None:
    torch.manual_seed(0)
    model, processor = load_base(tiny_spec)
    adapter = StageAdapter.attach(model.double(), tiny_spec, stage, init_lora_weights=False)
    pad_id = processor.tokenizer.pad_token_id
    examples = [
        encode_example(
            processor,
            [lesion_volume(side) if volume else lesion_image(side, seed=i)],
            question,
            answer,
            canvas=112,
            max_length=384,
        )
        for i, (_, side, question, answer) in enumerate(ROWS)
    ]
    units = [u for u, *_ in ROWS]
    parameters = [p for _, p in adapter.trainable_parameters()]

    hooks = PerSampleGradients(adapter.model)
    inputs, labels = double_inputs(collate(examples, pad_id))
    with hooks.capture(examples):
        answer_token_loss(adapter.model(**inputs).logits, labels).sum().backward()
    assert set(hooks.grad_samples) == set(parameters)
    per_unit = sum_per_unit(hooks.grad_samples, torch.tensor(units), 3)
    clipped_sum, norms = clip_and_sum(per_unit, CLIP)
    hooks.remove()
    for p in parameters:
        p.grad = None

    brute = unit_gradients_brute_force(adapter, examples, units, pad_id)
    brute_norms = torch.stack([torch.cat([g.flatten() for g in grads]).norm() for grads in brute])
    torch.testing.assert_close(norms, brute_norms, rtol=1e-6, atol=1e-9)
    assert (brute_norms > CLIP).all(), "the test must exercise clipping"
    for position, parameter in enumerate(parameters):
        expected = sum(
            grads[position] * min(1.0, CLIP / float(norm))
            for grads, norm in zip(brute, brute_norms, strict=True)
        )
        assert (clipped_sum[parameter] - expected).abs().max() < 1e-5


def site_samples() -> tuple[list[Sample], list[str]]:
    geometry = Geometry(112, 112, 112)
    samples = [
        Sample(
            f"r{i}",
            f"patient-{unit}",
            "vqa",
            "zh" if "？" in q else "en",
            "train",
            (lesion_image(side, seed=i),),
            (geometry,),
            {"question": q, "answer": a},
        )
        for i, (unit, side, q, a) in enumerate(ROWS)
    ]
    return samples, [s.patient_id for s in samples]


def instruct_trainer(spec, init_lora_weights: bool = True) -> LocalTrainer:
    """A CPU trainer of ``spec``'s ``instruct`` adapter on a fresh base (with
    ``init_lora_weights`` off, LoRA's ``B`` starts random, so every matrix has a gradient)."""
    model, processor = load_base(spec)
    adapter = StageAdapter.attach(model, spec, "instruct", init_lora_weights=init_lora_weights)
    return LocalTrainer(adapter, processor, spec, torch.device("cpu"))


LAYOUTS = {
    "lora": {},
    "frozen-a": {"frozen_a": True},
    "clip-groups": {"clip_groups": (r"visual\.",)},
    "answer-rows": {"answer_vocabulary": TINY_ANSWER_VOCABULARY},
    "weighted": {},
}
RECORD_WEIGHTS = [0.2, 1.0, 0.6, 0.5, 0.3]
"""Record weights of the ``weighted`` case (:mod:`client.privacy.answer_prior`): unit 0 weighs
0.4 (the mean of its records' 0.2 and 0.6), unit 1 0.65, unit 2 0.5."""


@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_dp_step_update_matches_hand_computation(tiny_spec, layout: str) -> None:
    """Guards against silently corrupted LoRA updates (cf. Opacus issue 820). With a frozen-A
    layout only the B matrices are clipped and move; every A array comes back bit for bit.
    With clip groups each unit's gradient is clipped group by group to ``C / sqrt(G)``. With
    an answer vocabulary its ``lm_head`` rows are clipped with the LoRA matrices and move.
    With record weights each unit's clipped gradient is scaled by its records' mean weight."""
    torch.manual_seed(0)
    spec = replace(tiny_spec, instruct=replace(tiny_spec.instruct, **LAYOUTS[layout]))
    frozen_a, patterns = spec.instruct.frozen_a, spec.instruct.clip_groups
    trainer = instruct_trainer(spec, init_lora_weights=False)
    adapter, processor = trainer.adapter, trainer.processor
    samples, units = site_samples()
    examples = trainer.encode(samples)
    before = adapter.arrays()
    frozen_before = {
        n: p.detach().clone() for n, p in adapter.model.named_parameters() if not p.requires_grad
    }

    unit_of = [int(u.split("-")[1]) for u in units]
    brute = unit_gradients_brute_force(
        _double_copy(adapter, spec), examples, unit_of, processor.tokenizer.pad_token_id
    )
    names = [n for n, _ in adapter.trainable_parameters()]
    group = [next((i for i, p in enumerate(patterns) if re.search(p, n)), -1) for n in names]
    bound = CLIP / len(set(group)) ** 0.5
    factors = [group_factors(grads, group, bound) for grads in brute]
    if patterns:
        assert len(set(group)) == 2 and all(min(f.values()) < 1.0 for f in factors)
        whole = [float(torch.cat([g.flatten() for g in grads]).norm()) for grads in brute]
        merger = [f[0] for f in factors]
        assert any(abs(m - CLIP / n) > 0.1 * m for m, n in zip(merger, whole, strict=True)), (
            "group-wise clipping must differ from clipping the whole gradient here"
        )
    weights = RECORD_WEIGHTS if layout == "weighted" else None
    unit_weight = [1.0] * len(brute)
    if weights is not None:
        unit_weight = [
            float(np.mean([w for w, u in zip(weights, unit_of, strict=True) if u == unit]))
            for unit in range(len(brute))
        ]
    trainer.train(samples, units, EXACT_STEP, record_weights=weights, progress=False)

    after = adapter.arrays()
    lora = [name for name in names if ROWS_MARKER not in name]
    lora_before = [name for name in before if ROWS_MARKER not in name]
    assert len(names) - len(lora) == (1 if spec.instruct.answer_vocabulary else 0)
    assert len(lora) == (len(lora_before) // 2 if frozen_a else len(lora_before))
    assert all(".lora_B." in name for name in lora) == frozen_a
    for name in set(before) - set(names):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    for position, name in enumerate(names):
        expected_grad = (
            sum(
                grads[position] * unit_factors[group[position]] * weight
                for grads, unit_factors, weight in zip(brute, factors, unit_weight, strict=True)
            )
            / 3.0
        )
        expected = before[name] - EXACT_STEP.learning_rate * expected_grad.float().numpy()
        np.testing.assert_allclose(after[name], expected, atol=1e-6, rtol=1e-4, err_msg=name)
    for name, parameter in adapter.model.named_parameters():
        if not parameter.requires_grad:
            assert torch.equal(parameter, frozen_before[name]), name


def group_factors(grads: list[torch.Tensor], group: list[int], bound: float) -> dict[int, float]:
    """``min(1, bound / norm)`` of each clip group of one unit's gradient."""
    norms = {
        g: torch.cat([x.flatten() for x, h in zip(grads, group, strict=True) if h == g]).norm()
        for g in set(group)
    }
    return {g: min(1.0, bound / float(norm)) for g, norm in norms.items()}


def _double_copy(adapter: StageAdapter, spec) -> StageAdapter:
    """The same adapter weights on a float64 copy of the model (brute force in float64)."""
    model, _ = load_base(spec)
    twin = StageAdapter.attach(model.double(), spec, adapter.stage, init_lora_weights=False)
    state = {
        n: torch.from_numpy(a).double().numpy().astype(np.float64)
        for n, a in adapter.arrays().items()
    }
    from peft.utils import set_peft_model_state_dict

    set_peft_model_state_dict(twin.model, {n: torch.from_numpy(v) for n, v in state.items()})
    return twin


def test_noise_has_the_calibrated_scale(tiny_spec) -> None:
    trainer = instruct_trainer(tiny_spec)
    adapter = trainer.adapter
    samples, units = site_samples()
    before = adapter.arrays()
    trainer.train(samples, units, PURE_NOISE_STEP, progress=False)
    deltas = np.concatenate([(adapter.arrays()[n] - before[n]).ravel() for n in before])
    expected_std = PURE_NOISE_STD
    # five standard errors of the sample's std and mean over the adapter's coordinates
    assert abs(deltas.std() / expected_std - 1.0) < 5 / np.sqrt(2 * deltas.size)
    assert abs(deltas.mean()) < 5 * expected_std / np.sqrt(deltas.size)


def test_the_merger_learns_at_a_fraction_of_the_lora_rate(tiny_spec) -> None:
    # a layout that trains the merger in full (the tiny base's own keeps it frozen)
    layout = replace(
        tiny_spec.instruct, modules_to_save=("merger",), answer_vocabulary=TINY_ANSWER_VOCABULARY
    )
    spec = replace(tiny_spec, instruct=layout)
    model, _ = load_base(spec)
    adapter = StageAdapter.attach(model, spec, "instruct")
    config = TrainConfig(steps=1, sample_rate=1.0, learning_rate=2e-3, projector_lr_scale=0.05)
    groups = parameter_groups(adapter.trainable_parameters(), config)
    names = {id(p): n for n, p in adapter.trainable_parameters()}
    adapted, projector = groups
    adapted_names = [names[id(p)] for p in adapted["params"]]
    assert "lr" not in adapted
    assert all("lora_" in name or ROWS_MARKER in name for name in adapted_names)
    assert any(ROWS_MARKER in name for name in adapted_names), "output rows at the LoRA rate"
    assert projector["lr"] == pytest.approx(1e-4)
    assert all("merger" in names[id(p)] for p in projector["params"])
    assert len(adapted["params"]) + len(projector["params"]) == len(names)


def test_the_output_rows_can_learn_at_a_multiple_of_the_lora_rate(tiny_spec) -> None:
    layout = replace(tiny_spec.instruct, answer_vocabulary=TINY_ANSWER_VOCABULARY)
    spec = replace(tiny_spec, instruct=layout)
    model, _ = load_base(spec)
    adapter = StageAdapter.attach(model, spec, "instruct")
    config = TrainConfig(steps=1, sample_rate=1.0, learning_rate=2e-3, rows_lr_scale=10.0)
    names = {id(p): n for n, p in adapter.trainable_parameters()}
    lora, rows = parameter_groups(adapter.trainable_parameters(), config)
    assert "lr" not in lora and all("lora_" in names[id(p)] for p in lora["params"])
    assert rows["lr"] == pytest.approx(2e-2)
    assert [ROWS_MARKER in names[id(p)] for p in rows["params"]] == [True]
    with pytest.raises(ValueError, match="rows_lr_scale"):
        TrainConfig(steps=1, sample_rate=1.0, rows_lr_scale=0.0)
