"""``benchmarks/dp_learning.py``'s measure of what a DP step carries before its noise."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from client.trainer import LocalTrainer
from shared_model.inputs import collate
from shared_model.loading import stage_model
from shared_model.loss import answer_token_loss, answer_window
from tests.conftest import load_benchmark, side_records


@pytest.fixture(scope="module")
def dp_learning() -> ModuleType:
    return load_benchmark("dp_learning.py")


def test_step_signal_is_the_mean_gradient_when_nothing_is_clipped(dp_learning, tiny_spec) -> None:
    torch.manual_seed(0)
    adapter, processor = stage_model(tiny_spec, "instruct")
    for name, parameter in adapter.trainable_parameters():
        if "lora_B" in name:  # LoRA starts at B = 0; a non-zero B gives every matrix a gradient
            torch.nn.init.normal_(parameter, std=0.05)
    trainer = LocalTrainer(adapter, processor, tiny_spec, torch.device("cpu"))
    samples = side_records()

    unclipped = dp_learning.step_signal(trainer, samples, max_grad_norm=1e6)
    batch = collate(trainer.encode(samples), processor.tokenizer.pad_token_id).inputs
    labels = batch.pop("labels")
    window = answer_window(labels)
    loss = answer_token_loss(
        adapter.model(**batch, logits_to_keep=window).logits, labels[:, -window:]
    ).mean()
    parameters = [parameter for _, parameter in adapter.trainable_parameters()]
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    mean_norm = torch.sqrt(sum((g**2).sum() for g in grads if g is not None)).item()
    assert unclipped["clipped_share"] == 0.0
    assert unclipped["signal"] * 1e6 == pytest.approx(mean_norm, rel=1e-3)
    assert unclipped["median_norm"] >= mean_norm / len(samples)

    clipped = dp_learning.step_signal(trainer, samples, max_grad_norm=1e-6)
    assert clipped["clipped_share"] == 1.0
    assert 0.0 < clipped["signal"] <= 1.0 + 1e-6
    assert clipped["median_norm"] == pytest.approx(unclipped["median_norm"])


def test_signal_by_module_splits_the_clipped_signal_over_the_lora_matrices(
    dp_learning, tiny_spec
) -> None:
    module = load_benchmark("signal_by_module.py")
    torch.manual_seed(0)
    adapter, processor = stage_model(tiny_spec, "instruct")
    for name, parameter in adapter.trainable_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    trainer = LocalTrainer(adapter, processor, tiny_spec, torch.device("cpu"))
    samples = side_records()
    mean, _ = dp_learning.clipped_mean(trainer, samples, max_grad_norm=1e-3)

    modules = module.by_module(trainer, mean)
    named = adapter.trainable_parameters()
    assert sum(m["d"] for m in modules.values()) == sum(p.numel() for _, p in named)
    assert sum(m["sq"] for m in modules.values()) == pytest.approx(
        sum(float((part**2).sum()) for part in mean)
    )
    assert module.module_of(named[0][0]) == "merger.0 A"
    assert {"L0 q_proj B", "L2 down_proj A", "merger.2 B"} <= set(modules)
    assert all(m["sq"] > 0 for name, m in modules.items() if name.endswith(" B"))
