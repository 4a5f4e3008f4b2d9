"""Answering in batches of like questions: every answer comes back in the samples' order, and
each is what the model answers to that question asked alone."""

from __future__ import annotations

from collections.abc import Sequence

from shared_model.evaluation import answer_samples
from shared_model.inference import Answer, Question, load_answerer
from shared_model.sample import Geometry, Sample
from shared_model.tasks import Reading
from tests.conftest import lesion_image, lesion_volume

CANVAS = 56


def mixed_samples() -> list[Sample]:
    """Radiographs and volumes, English and Chinese, closed questions and reports, interleaved
    so that no two neighbours are alike."""
    kinds = [
        ("vqa", "en", False, {"question": "Is there a lesion?", "options": ["yes", "no"]}),
        ("report", "zh", True, {"report": "所见：双肺清晰。印象：正常。"}),
        ("classification", "en", True, {"question": "Finding?", "options": ["normal", "mass"]}),
        ("report", "en", False, {"report": "Findings: lungs are clear. Impression: normal."}),
        ("vqa", "zh", False, {"question": "图像中有病灶吗？", "options": ["是", "否"]}),
    ]
    samples = []
    for number in range(10):
        task, lang, volume, fields = kinds[number % len(kinds)]
        side = ("left", "right")[number % 2]
        image = lesion_volume(side, canvas=CANVAS) if volume else lesion_image(side, CANVAS, number)
        geometry = Geometry(CANVAS, CANVAS, CANVAS, depth=4 if volume else None)
        fields = {**fields, "answer": fields["options"][0]} if "options" in fields else fields
        if task == "classification":
            fields = {**fields, "label": 1}
            fields.pop("answer")
        samples.append(
            Sample(f"r{number}", f"p{number}", task, lang, "test", (image,), (geometry,), fields)
        )
    return samples


class Recorder:
    """Answers each question with its position in ``samples``; remembers every batch."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples, self.batches = samples, []

    def answer(self, questions: Sequence[Question]) -> list[Answer]:
        positions = [
            next(i for i, s in enumerate(self.samples) if s.images is q.images) for q in questions
        ]
        self.batches.append(positions)
        return [Answer(str(position), Reading(None, None)) for position in positions]


def test_batches_hold_one_kind_and_answers_come_back_in_order() -> None:
    samples = mixed_samples()
    recorder = Recorder(samples)
    answers = answer_samples(recorder, samples, batch_size=3)
    assert [answer.text for answer in answers] == [str(i) for i in range(len(samples))]
    assert sorted(i for batch in recorder.batches for i in batch) == list(range(len(samples)))
    for batch in recorder.batches:
        kinds = {(samples[i].task, samples[i].lang, samples[i].is_volume) for i in batch}
        assert len(kinds) == 1, [samples[i].record_id for i in batch]


def test_batched_answers_are_the_questions_asked_alone(tiny_base) -> None:
    samples = mixed_samples()
    answerer = load_answerer(tiny_base, CANVAS, device="cpu")
    alone = [answer_samples(answerer, [sample], batch_size=1)[0] for sample in samples]
    batched = answer_samples(answerer, samples, batch_size=4)
    assert [a.text for a in batched] == [a.text for a in alone]
    assert [a.reading for a in batched] == [a.reading for a in alone]
