"""Per-patient gradients stay exact under gradient checkpointing and token-budget batching.

A 2D and a 3D record (different vision patch grids) share one physical batch; every patient's
gradient is checked in float64 against a brute-force backward of that patient alone.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from client.batching import UnitIndex, sample_step
from client.privacy.per_unit import PerSampleGradients, StreamingClipper, sum_per_unit
from client.privacy.randomness import SiteRandomness
from client.trainer import LocalTrainer, _Checkpointing
from shared_model.adapters import StageAdapter
from shared_model.inputs import collate, encode_example
from shared_model.loading import load_base
from shared_model.loss import answer_token_loss
from shared_model.sample import Geometry, Sample
from tests.conftest import lesion_image, lesion_volume
from tests.test_dp_exact import EXACT_STEP

RECORDS = [  # (patient, volume, side, question, answer)
    (0, False, "left", "Which side?", "left"),
    (1, True, "right", "Where is the lesion?", "on the right"),
    (0, True, "left", "病灶在哪里？", "左侧"),
    (2, False, "right", "Describe the image.", "a bright lesion on the right"),
]
CLIP = 0.05


def double(batch) -> tuple[dict, torch.Tensor]:
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in batch.inputs.items()}
    return inputs, inputs.pop("labels")


@pytest.fixture(scope="module", params=["align", "instruct"])
def setup(request, tiny_spec):
    torch.manual_seed(0)
    model, processor = load_base(tiny_spec)
    adapter = StageAdapter.attach(model.double(), tiny_spec, request.param, init_lora_weights=False)
    examples = [
        encode_example(
            processor,
            [lesion_volume(side) if volume else lesion_image(side, seed=i)],
            question,
            answer,
            canvas=112,
            max_length=384,
        )
        for i, (_, volume, side, question, answer) in enumerate(RECORDS)
    ]
    return adapter, examples, processor.tokenizer.pad_token_id


def brute_force(adapter, examples, pad_id) -> list[list[torch.Tensor]]:
    """Each patient's gradient from a plain backward of that patient's records alone."""
    parameters = [p for _, p in adapter.trainable_parameters()]
    adapter.model.train()
    result = []
    for unit in sorted({r[0] for r in RECORDS}):
        rows = [e for e, r in zip(examples, RECORDS, strict=True) if r[0] == unit]
        inputs, labels = double(collate(rows, pad_id))
        answer_token_loss(adapter.model(**inputs).logits, labels).sum().backward()
        result.append([p.grad.clone() for p in parameters])
        for p in parameters:
            p.grad = None
    return result


def hooked_unit_gradients(adapter, micro_batches, pad_id, checkpointing: bool):
    """Per-unit gradients (unclipped) and the streaming-clipped sum over ``micro_batches``,
    each a list of (examples, unit slots)."""
    parameters = [p for _, p in adapter.trainable_parameters()]
    model = adapter.model.train()
    switch = _Checkpointing(model, checkpointing)
    hooks = PerSampleGradients(model)
    clipper = StreamingClipper([slots for _, slots in micro_batches], CLIP)
    per_unit = {}
    try:
        for examples, slots in micro_batches:
            inputs, labels = double(collate(examples, pad_id))
            with hooks.capture(examples):
                answer_token_loss(model(**inputs).logits, labels).sum().backward()
            per_unit = sum_per_unit(hooks.grad_samples, slots, 3, into=per_unit)
            clipper.add(hooks.grad_samples, slots)
    finally:
        hooks.remove()
        switch.restore()
    for parameter in parameters:
        parameter.grad = None  # the trainer overwrites it with the noised clipped sum
    return per_unit, clipper


def assert_matches_brute_force(adapter, per_unit, clipper, brute) -> None:
    """Equal up to the float32 parts of the model's own arithmetic (its rotary tables)."""
    parameters = [p for _, p in adapter.trainable_parameters()]
    assert set(per_unit) == set(parameters)
    norms = torch.stack([torch.cat([g.flatten() for g in grads]).norm() for grads in brute])
    assert (norms > CLIP).all(), "the test must exercise clipping"
    assert sorted(clipper.norms) == pytest.approx(sorted(norms.tolist()), rel=1e-6)
    for position, parameter in enumerate(parameters):
        expected = torch.stack([grads[position] for grads in brute])
        scale = float(expected.abs().max())
        assert scale > 0, "an all-zero gradient checks nothing"
        torch.testing.assert_close(per_unit[parameter], expected, rtol=1e-6, atol=1e-6 * scale)
        clipped = sum(
            g[position] * min(1.0, CLIP / float(n)) for g, n in zip(brute, norms, strict=True)
        )
        torch.testing.assert_close(clipper.total[parameter], clipped, rtol=1e-6, atol=1e-6 * scale)


def test_mixed_2d_3d_batch_checkpointing_changes_no_per_patient_gradient(setup) -> None:
    adapter, examples, pad_id = setup
    assert len({e.vision_shape for e in examples}) > 1, "2D and 3D records in one batch"
    slots = torch.tensor([r[0] for r in RECORDS])
    plain, plain_clipper = hooked_unit_gradients(adapter, [(examples, slots)], pad_id, False)
    checkpointed, clipper = hooked_unit_gradients(adapter, [(examples, slots)], pad_id, True)
    for parameter, gradient in plain.items():
        assert (checkpointed[parameter] - gradient).abs().max() <= 1e-13 * gradient.abs().max()
    assert clipper.norms == pytest.approx(plain_clipper.norms, rel=1e-13)
    assert_matches_brute_force(
        adapter, checkpointed, clipper, brute_force(adapter, examples, pad_id)
    )


def test_token_budget_batches_keep_gradients_exact(setup) -> None:
    adapter, examples, pad_id = setup
    lengths = [len(e.input_ids) for e in examples]
    budget = 2 * max(lengths) - 1  # the longest record cannot share its micro-batch
    step = sample_step(
        UnitIndex.build([str(r[0]) for r in RECORDS]),
        1.0,
        lambda record: lengths[record],
        physical_batch_size=8,
        token_budget=budget,
        max_records_per_unit=8,
        randomness=SiteRandomness.replayable(0, "site", "stage", 1),
    )
    assert len(step.micro_batches) > 1 and step.n_records == len(RECORDS)
    for micro in step.micro_batches:
        assert len(micro.records) * max(lengths[r] for r in micro.records) <= budget
    # slots follow first-seen unit order, which is the patient number here
    micro_batches = [([examples[r] for r in m.records], m.unit_slots) for m in step.micro_batches]
    brute = brute_force(adapter, examples, pad_id)
    per_unit, clipper = hooked_unit_gradients(adapter, micro_batches, pad_id, checkpointing=True)
    assert_matches_brute_force(adapter, per_unit, clipper, brute)


def test_trainer_step_is_the_same_with_checkpointing_and_a_small_budget(tiny_spec) -> None:
    """The trainer's own path: one DP step (noise 0) with checkpointing and a token budget
    that splits the step equals one without either."""
    geometry = Geometry(112, 112, 112)
    samples = [
        Sample(
            f"r{i}",
            f"patient-{unit}",
            "vqa",
            "zh" if "？" in question else "en",
            "train",
            (lesion_volume(side) if volume else lesion_image(side, seed=i),),
            (geometry,),
            {"question": question, "answer": answer},
        )
        for i, (unit, volume, side, question, answer) in enumerate(RECORDS)
    ]
    units = [s.patient_id for s in samples]
    results = []
    checkpointed = replace(EXACT_STEP, gradient_checkpointing=True, token_budget=64)
    for variant in (EXACT_STEP, checkpointed):
        torch.manual_seed(0)
        model, processor = load_base(tiny_spec)
        adapter = StageAdapter.attach(model, tiny_spec, "instruct", init_lora_weights=False)
        trainer = LocalTrainer(adapter, processor, tiny_spec, torch.device("cpu"))
        before = adapter.arrays()
        trainer.train(samples, units, variant, progress=False)
        results.append((before, adapter.arrays()))
        assert not adapter.model.get_base_model().is_activation_checkpointing
    (before_a, after_a), (before_b, after_b) = results
    for name in before_a:
        assert (before_a[name] == before_b[name]).all()
        assert abs(after_a[name] - before_a[name]).max() > 0, name
        assert abs(after_a[name] - after_b[name]).max() < 1e-6, name
