"""Contrast with public images: the controls, the exact DP step, the site's section."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from client.config import ContrastConfig, SiteConfigError, load_site_config
from client.privacy.contrast import CONTROL_PREFIX, public_controls, public_pairs
from client.trainer import TrainConfig
from shared_model.inputs import collate
from shared_model.loss import answer_token_loss
from shared_model.sample import Geometry, Sample
from shared_model.tiny import SPEC_FILE
from simulations.runner import write_site_config
from simulations.synthetic import generate_consortium, generate_public_archive
from tests.conftest import lesion_image
from tests.test_dp_exact import (
    CLIP,
    EXACT_STEP,
    _double_copy,
    double_inputs,
    instruct_trainer,
    site_samples,
)

WEIGHT = 0.75


def public_image_record(name: str, side: str, size: int, seed: int) -> Sample:
    """A public record whose only use is its image."""
    return Sample(
        name,
        f"public-{name}",
        "classification",
        "en",
        "train",
        (lesion_image(side, canvas=size, seed=seed),),
        (Geometry(size, size, size),),
        {"options": ["a", "b"], "answer": 0},
    )


def test_controls_keep_the_prompt_and_take_a_public_image_of_the_same_shape() -> None:
    samples, _ = site_samples()
    public = [
        public_image_record("p0", "left", 112, 90),
        public_image_record("p1", "right", 112, 91),
        public_image_record("p2", "left", 64, 92),
    ]
    odd = replace(samples[0], record_id="odd", images=(lesion_image("left", canvas=80, seed=3),))
    controls = public_controls(public, [*samples, odd])

    assert controls[-1] is None  # no public image of that shape
    for record, control, image in zip(samples, controls[:-1], [0, 1, 0, 1, 0], strict=True):
        assert control.record_id == CONTROL_PREFIX + record.record_id
        assert (control.patient_id, control.task, control.lang) == (
            record.patient_id,
            record.task,
            record.lang,
        )
        assert control.fields == record.fields
        assert control.images[0] is public[image].images[0]  # taken in turn, never the 64 px one
        assert control.geometries == public[image].geometries


def test_public_pairs_take_the_next_public_image_of_the_same_shape() -> None:
    public = [
        public_image_record("p0", "left", 112, 90),
        public_image_record("p1", "right", 112, 91),
        public_image_record("p2", "left", 64, 92),
        public_image_record("p3", "right", 112, 93),
    ]
    pairs = public_pairs(public)

    assert pairs[2] is None  # the only 64 px record: no other image to contrast with
    for index, partner in ((0, 1), (1, 3), (3, 0)):
        assert pairs[index].record_id == CONTROL_PREFIX + public[index].record_id
        assert pairs[index].fields == public[index].fields
        assert pairs[index].images[0] is public[partner].images[0]


def test_a_contrasted_subspace_spans_the_contrasted_gradients(tiny_spec) -> None:
    """With a control weight the basis is found on each public record's gradient minus the
    weight times its pair's: every such gradient lies in the span of all the directions, and
    the plain records' basis misses them."""
    torch.manual_seed(0)
    trainer = instruct_trainer(tiny_spec, init_lora_weights=False)
    public, _ = site_samples()
    pairs = public_pairs(public)
    config = TrainConfig(steps=1, sample_rate=1.0, control_weight=WEIGHT)
    gradients = trainer.record_gradients(public, config, source="public")
    contrasted = gradients - WEIGHT * trainer.record_gradients(pairs, config, source="public")

    def residual(basis: torch.Tensor) -> torch.Tensor:
        outside = contrasted - (contrasted @ basis) @ basis.T
        return outside.norm(dim=1) / contrasted.norm(dim=1)

    k = len(public)
    spanning = trainer.gradient_subspace(public, k, config, by_task=False, controls=pairs)
    plain = trainer.gradient_subspace(public, k, config, by_task=False)
    unweighted = trainer.gradient_subspace(
        public, k, replace(config, control_weight=0.0), by_task=False, controls=pairs
    )
    assert residual(spanning.basis).max() < 1e-3
    assert residual(plain.basis).max() > 0.1
    same_span = unweighted.basis @ (unweighted.basis.T @ plain.basis)
    torch.testing.assert_close(same_span, plain.basis, atol=1e-4, rtol=1e-3)


def brute_force_contrast(adapter, examples, controls, units, pad_id) -> list[list[torch.Tensor]]:
    """Each unit's gradient of its records' summed answer loss minus WEIGHT times its
    controls' (float64, one backward pass a unit)."""
    parameters = [p for _, p in adapter.trainable_parameters()]
    result = []
    for unit in sorted(set(units)):
        own = [e for e, u in zip(examples, units, strict=True) if u == unit]
        paired = [c for c, u in zip(controls, units, strict=True) if u == unit and c is not None]
        loss = 0.0
        for rows, sign in ((own, 1.0), (paired, -WEIGHT)):
            if rows:
                inputs, labels = double_inputs(collate(rows, pad_id))
                loss = loss + sign * answer_token_loss(adapter.model(**inputs).logits, labels).sum()
        loss.backward()
        result.append([p.grad.clone() for p in parameters])
        for p in parameters:
            p.grad = None
    return result


def test_one_dp_step_with_controls_matches_hand_computation(tiny_spec) -> None:
    """Each unit's records minus WEIGHT times their controls, clipped to C as one gradient,
    summed and divided by q N; a record without a control counts alone."""
    torch.manual_seed(0)
    trainer = instruct_trainer(tiny_spec, init_lora_weights=False)
    adapter, processor = trainer.adapter, trainer.processor
    samples, units = site_samples()
    public = [public_image_record(f"p{i}", side, 112, 80 + i) for i, side in enumerate("lr")]
    controls = public_controls(public, samples)
    controls[3] = None  # patient 2's only record: no control
    unit_of = [int(u.split("-")[1]) for u in units]
    examples = trainer.encode(samples)
    control_examples = [None if c is None else trainer.encode([c])[0] for c in controls]
    names = [n for n, _ in adapter.trainable_parameters()]
    before = adapter.arrays()

    brute = brute_force_contrast(
        _double_copy(adapter, tiny_spec),
        examples,
        control_examples,
        unit_of,
        processor.tokenizer.pad_token_id,
    )
    norms = [float(torch.cat([g.flatten() for g in grads]).norm()) for grads in brute]
    assert all(norm > CLIP for norm in norms), "the test must exercise clipping"
    step = replace(EXACT_STEP, control_weight=WEIGHT, physical_batch_size=2)  # a pair a pass
    trainer.train(samples, units, step, controls=controls, progress=False)

    after = adapter.arrays()
    for position, name in enumerate(names):
        factors = [min(1.0, CLIP / norm) for norm in norms]
        expected_grad = sum(
            grads[position] * factor for grads, factor in zip(brute, factors, strict=True)
        ) / len(brute)
        expected = before[name] - step.learning_rate * expected_grad.float().numpy()
        np.testing.assert_allclose(after[name], expected, atol=1e-6, rtol=1e-4, err_msg=name)


def test_controls_change_the_step_only_with_a_weight(tiny_spec) -> None:
    samples, units = site_samples()
    public = [public_image_record("p0", "right", 112, 70)]
    updates = []
    for weight, controls in ((0.0, public_controls(public, samples)), (0.0, None), (1.0, None)):
        torch.manual_seed(0)
        trainer = instruct_trainer(tiny_spec, init_lora_weights=False)
        before = trainer.adapter.arrays()
        step = replace(EXACT_STEP, control_weight=weight)
        trainer.train(samples, units, step, controls=controls, progress=False)
        updates.append({n: a - before[n] for n, a in trainer.adapter.arrays().items()})
    for name in updates[0]:
        np.testing.assert_array_equal(updates[0][name], updates[1][name])
        np.testing.assert_array_equal(updates[2][name], updates[1][name])
    with pytest.raises(ValueError, match="1 controls for 5 samples"):
        trainer.train(samples, units, EXACT_STEP, controls=[None], progress=False)


@pytest.fixture
def archives(tmp_path: Path) -> tuple[Path, Path]:
    site = generate_consortium(tmp_path / "archives", n_sites=1, patients=6, seed=5)[0]
    return site, generate_public_archive(tmp_path / "public", patients=4)


def contrast_site(tmp_path: Path, tiny_base: Path, site: Path, name="site", **table) -> Path:
    """A site config over ``site`` with ``table`` as its ``[contrast]`` section (none when
    empty)."""
    return write_site_config(
        tmp_path / f"{name}.toml",
        name=name,
        archive=site,
        work_dir=tmp_path / f"{name}-work",
        model_spec=tiny_base / SPEC_FILE,
        contrast=table or None,
    )


def test_the_contrast_section_is_checked(tmp_path, tiny_base, archives) -> None:
    site, public = archives
    with pytest.raises(SiteConfigError, match=r"\[contrast.public_archive\] must not be the site"):
        contrast_site(tmp_path, tiny_base, site, public_archive=str(site))
    with pytest.raises(SiteConfigError, match=r"\[contrast.weight\] must be in \(0, 1\]"):
        contrast_site(tmp_path, tiny_base, site, public_archive=str(public), weight=1.5)
    with pytest.raises(SiteConfigError, match=r"\[contrast.weight\] must be in \(0, 1\]"):
        contrast_site(tmp_path, tiny_base, site, public_archive=str(public), weight=0)
    with pytest.raises(SiteConfigError, match=r"\[contrast.records\] must be at least 1"):
        contrast_site(tmp_path, tiny_base, site, public_archive=str(public), records=0)
    with pytest.raises(SiteConfigError, match=r"\[contrast.wieght\]"):
        contrast_site(tmp_path, tiny_base, site, public_archive=str(public), wieght=1)
    loaded = load_site_config(
        contrast_site(tmp_path, tiny_base, site, public_archive=str(public), weight=1)
    )
    assert loaded.contrast == ContrastConfig(public.resolve(), weight=1.0, records=256)
    assert loaded.subspace is None


def test_a_site_contrasts_its_records_with_public_images_only(tmp_path, tiny_base, archives):
    from client.site import Site

    site_archive, public = archives
    site = Site(
        load_site_config(
            contrast_site(tmp_path, tiny_base, site_archive, public_archive=str(public))
        ),
        progress=False,
    )
    samples = site.samples("train", "instruct")
    controls = site.controls(samples, "instruct")
    public_records = site._public["contrast", "instruct"]
    assert {s.patient_id for s in public_records}.isdisjoint({s.patient_id for s in samples})
    assert len(controls) == len(samples) and all(c is not None for c in controls)
    public_images = {id(image) for record in public_records for image in record.images}
    for record, control in zip(samples, controls, strict=True):
        assert control.fields == record.fields and control.patient_id == record.patient_id
        assert all(id(image) in public_images for image in control.images)
    plain = Site(
        load_site_config(contrast_site(tmp_path, tiny_base, site_archive, name="plain")),
        progress=False,
    )
    assert plain.controls(plain.samples("train", "instruct"), "instruct") is None
