"""Collation: answer-only labels, the video path for volumes, padding and patient ids."""

from __future__ import annotations

import torch

from shared_model.inputs import IGNORE_INDEX, collate, encode_sample
from shared_model.loading import load_base
from shared_model.sample import Geometry, Sample
from shared_model.tasks import get_task
from tests.conftest import lesion_image, lesion_volume


def sample(record: str, patient: str, lang: str, volume: bool) -> Sample:
    fields = {"question": "Which side?", "answer": "left", "options": ["left", "right"]}
    if lang == "zh":
        fields = {"question": "哪一侧？", "answer": "左侧", "options": ["左侧", "右侧"]}
    image = lesion_volume("left") if volume else lesion_image("left")
    geometry = Geometry(112, 112, 112, depth=4 if volume else None)
    return Sample(record, patient, "vqa", lang, "train", (image,), (geometry,), fields)


def test_labels_cover_exactly_the_answer(tiny_spec) -> None:
    _, processor = load_base(tiny_spec)
    tokenizer = processor.tokenizer
    for lang in ("en", "zh"):
        item = sample("r1", "p1", lang, volume=False)
        example = encode_sample(processor, item, tiny_spec)
        learned = example.labels[example.labels != IGNORE_INDEX]
        target = get_task("vqa").target(item.fields, lang)
        assert tokenizer.decode(learned) == target + "<|im_end|>"
        answer_start = int((example.labels != IGNORE_INDEX).nonzero()[0])
        assert tokenizer.decode(example.input_ids[:answer_start]).endswith(
            "<|im_start|>assistant\n"
        )


def test_batch_of_images_and_volumes_pads_and_keeps_patients(tiny_spec) -> None:
    model, processor = load_base(tiny_spec)
    items = [
        sample("a", "p1", "en", False),
        sample("b", "p2", "zh", True),
        sample("c", "p1", "zh", False),
    ]
    examples = [encode_sample(processor, item, tiny_spec) for item in items]
    batch = collate(examples, processor.tokenizer.pad_token_id)
    inputs = batch.inputs
    assert batch.patient_ids == ["p1", "p2", "p1"]
    side = tiny_spec.canvas // 14  # patches a side
    assert inputs["video_grid_thw"].tolist() == [[tiny_spec.volume_slices // 2, side, side]]
    assert inputs["image_grid_thw"].tolist() == [[1, side, side], [1, side, side]]
    assert inputs["pixel_values_videos"].shape[0] == tiny_spec.volume_slices // 2 * side**2
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        assert inputs["attention_mask"][row].sum() == length
        assert torch.equal(inputs["input_ids"][row, :length], example.input_ids)
        assert (inputs["labels"][row, length:] == IGNORE_INDEX).all()
    video_tokens = (inputs["mm_token_type_ids"] == 2).sum()
    assert video_tokens == tiny_spec.volume_slices // 2 * (side // 2) ** 2
    with torch.no_grad():
        loss = model(**inputs).loss
    assert torch.isfinite(loss)
