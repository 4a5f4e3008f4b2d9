"""The tiny base's public phase: the tasks over a public archive from another scanner."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from transformers import Qwen2VLForConditionalGeneration

from shared_model.tiny import tiny_spec
from shared_model.tiny.build import TinyShape, pretrain_public, tiny_config, tiny_processor
from shared_model.tiny.public import public_examples
from shared_model.tiny.tokenizer import train_bilingual_tokenizer
from simulations.phantoms import HOSPITAL_SCANNER, PUBLIC_SCANNER, chest_xray, ct_volume


def test_public_scanner_frames_the_anatomy_wider_and_noisier() -> None:
    hospital, _ = chest_xray(np.random.default_rng(3), "mass")
    public, finding = chest_xray(np.random.default_rng(3), "mass", scanner=PUBLIC_SCANNER)
    assert hospital.shape == (96, 96) and public.shape == (128, 128)
    # the box and the landmark are where the image shows them, in the wider frame's pixels
    x1, y1, x2, y2 = finding.box
    lesion = public[round(y1) + 4 : round(y2) - 4, round(x1) + 4 : round(x2) - 4]
    assert lesion.mean() > 1700  # a mass: lung (900) plus 900
    mx, my = finding.landmark
    assert public[round(my), round(mx) + 3] > 3000  # on the marker's ring, 0.03 of 96 out
    assert 16 < mx < 112 and 16 < my < 112
    # the border is air outside the body, with twice the hospitals' noise
    corner = public[:12, :12].astype(float)
    assert abs(corner.mean() - 600) < 40 and 60 < corner.std() < 100
    assert 30 < hospital[:12, :12].astype(float).std() < 50
    volume, ct = ct_volume(np.random.default_rng(3), "nodule", scanner=PUBLIC_SCANNER)
    assert volume.shape == (16, 64, 64) and ct.box[0] >= 8 and ct.box[3] <= 56
    assert HOSPITAL_SCANNER.grid(96)[0] == 0


def test_public_phase_learns_the_tasks(tmp_path: Path) -> None:
    """A few steps on the public archive's task records lower their loss, from a random-init
    model of the tiny base's shape."""
    shape = TinyShape(
        pretrain_batch=8, public_patients=6, public_steps=40, public_learning_rate=3e-3
    )
    torch.manual_seed(0)
    tokenizer = train_bilingual_tokenizer(seed=0)
    processor = tiny_processor(tokenizer, shape.canvas)
    model = Qwen2VLForConditionalGeneration(tiny_config(shape, tokenizer))
    spec = tiny_spec(tmp_path, shape.volume_slices)
    examples = public_examples(spec, processor, shape.public_patients)
    assert len(examples) > 40
    assert all(e.vision_shape for e in examples)  # every record with its image or volume
    losses = pretrain_public(model, processor, spec, shape, progress=False)
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert pretrain_public(model, processor, spec, replace(shape, public_steps=0)) == []
