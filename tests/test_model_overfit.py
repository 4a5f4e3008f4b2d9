"""The tiny base learns a handful of bilingual VQA records to exact answers through generate."""

from __future__ import annotations

import torch

from shared_model.adapters import StageAdapter
from shared_model.inference import Answerer, Question
from shared_model.inputs import collate, encode_sample
from shared_model.loading import load_base
from shared_model.sample import Geometry, Sample
from shared_model.tasks import get_task
from tests.conftest import lesion_image

RECORDS = [
    (
        "en",
        "left",
        {
            "question": "Which side is the lesion on?",
            "answer": "left",
            "options": ["left", "right"],
        },
    ),
    (
        "en",
        "right",
        {
            "question": "Which side is the lesion on?",
            "answer": "right",
            "options": ["left", "right"],
        },
    ),
    ("zh", "left", {"question": "病灶在哪一侧？", "answer": "左侧", "options": ["左侧", "右侧"]}),
    ("zh", "right", {"question": "病灶在哪一侧？", "answer": "右侧", "options": ["左侧", "右侧"]}),
    ("en", "left", {"question": "What is the modality?", "answer": "x-ray"}),
    ("zh", "right", {"question": "这是什么成像方式？", "answer": "X光"}),
]


def test_overfits_bilingual_vqa(tiny_spec) -> None:
    torch.manual_seed(0)
    model, processor = load_base(tiny_spec)
    adapter = StageAdapter.attach(model, tiny_spec, "instruct")
    geometry = Geometry(112, 112, 112)
    samples = [
        Sample(
            f"r{i}",
            f"p{i}",
            "vqa",
            lang,
            "train",
            (lesion_image(side, seed=i),),
            (geometry,),
            fields,
        )
        for i, (lang, side, fields) in enumerate(RECORDS)
    ]
    batch = collate(
        [encode_sample(processor, s, tiny_spec) for s in samples], processor.tokenizer.pad_token_id
    )
    optimizer = torch.optim.AdamW([p for _, p in adapter.trainable_parameters()], lr=2e-3)
    answerer = Answerer(adapter.model, processor, canvas=tiny_spec.canvas, max_new_tokens=12)
    questions = [Question(s.images, "vqa", s.lang, s.fields) for s in samples]
    task = get_task("vqa")
    expected = [task.target(s.fields, s.lang) for s in samples]
    answers = []
    for step in range(1, 401):
        adapter.model.train()
        adapter.model(**batch.inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 25 == 0:
            answers = answerer.answer(questions)
            if [a.text for a in answers] == expected:
                break
    assert [a.text for a in answers] == expected
    assert [a.reading.strict for a in answers] == [task.reference(s.fields) for s in samples]
