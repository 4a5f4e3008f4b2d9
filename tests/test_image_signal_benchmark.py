"""``benchmarks/image_signal.py``: the part of a step's clipped signal that the image adds."""

from __future__ import annotations

import dataclasses
from types import ModuleType

import pytest
import torch

from client.trainer import LocalTrainer
from shared_model.loading import stage_model
from tests.conftest import load_benchmark, side_records


@pytest.fixture(scope="module")
def image_signal() -> ModuleType:
    return load_benchmark("image_signal.py")


@pytest.fixture(scope="module")
def trainer(tiny_spec) -> LocalTrainer:
    torch.manual_seed(0)
    adapter, processor = stage_model(tiny_spec, "instruct")
    for name, parameter in adapter.trainable_parameters():
        if "lora_B" in name:  # LoRA starts at B = 0; a non-zero B gives every matrix a gradient
            torch.nn.init.normal_(parameter, std=0.05)
    return LocalTrainer(adapter, processor, tiny_spec, torch.device("cpu"))


def test_relabelled_records_answer_the_new_answer_under_a_new_id(image_signal) -> None:
    (record,) = side_records(("left",))
    moved = image_signal.relabelled(record, "right", "1:right")
    assert moved.fields["label"] == "right" and record.fields["label"] == "left"
    assert moved.record_id != record.record_id and moved.images is record.images


def test_the_image_part_is_what_the_images_change(image_signal, trainer) -> None:
    records = side_records(("left", "left", "right", "right"))
    rows = image_signal.answer_rows(trainer, records, 2, 1.0, seed=0, smallest=2)
    assert [row["answer"] for row in rows] == ["0:left", "1:right"]
    assert all(row["image_part"] > 1e-3 and row["cosine"] < 1.0 for row in rows)

    # the same image under every record: relabelling changes nothing, so nothing is the image's
    same = [
        dataclasses.replace(r, record_id=f"same-{r.record_id}", images=records[0].images)
        for r in records
    ]
    rows = image_signal.answer_rows(trainer, same, 2, 1.0, seed=0, smallest=2)
    assert len(rows) == 2
    for row in rows:
        assert row["image_part"] == pytest.approx(0.0, abs=1e-6)
        assert row["own"] == pytest.approx(row["other_images"], rel=1e-5)
