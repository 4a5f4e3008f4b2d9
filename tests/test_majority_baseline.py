"""The majority-answer baseline of the simulate and compare tables: the most common answer of each
task, language and kind of answer, scored like a model; a model that answers the same to every
question does not beat it, one that reads its images does, beyond the interval."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console

from shared_model.inference import Answer
from shared_model.sample import Geometry, Sample
from shared_model.tasks import Reading, get_task
from simulations.experiment import CHANGES, FINAL, ROUND_0, scored_rows
from simulations.heldout import ModelAnswers
from simulations.majority import MAJORITY, VS_MAJORITY, majority_baseline
from simulations.report import established, print_metric_table

IMAGE = np.zeros((28, 28, 1), dtype=np.uint8)
YES_NO = ["yes", "no"]


def sample(number: int, task: str, lang: str, fields: dict[str, Any]) -> Sample:
    return Sample(
        record_id=f"{task}-{lang}-{number}",
        patient_id=f"P{number}",
        task=task,
        lang=lang,
        split="test",
        images=(IMAGE,),
        geometries=(Geometry(28, 28, 28),),
        fields=fields,
    )


def classification(labels: list[int], lang: str = "en") -> list[Sample]:
    options = ["normal", "pneumonia", "effusion"]
    return [
        sample(i, "classification", lang, {"question": "Finding?", "options": options, "label": k})
        for i, k in enumerate(labels)
    ]


def closed_vqa(answers: list[str], lang: str = "en") -> list[Sample]:
    return [
        sample(i, "vqa", lang, {"question": "Lesion?", "options": YES_NO, "answer": answer})
        for i, answer in enumerate(answers)
    ]


def right_answers(records: list[Sample]) -> list[Reading]:
    """Well-formed right answers (an image reader)."""
    return [Reading(*[get_task(s.task).reference(s.fields)] * 2) for s in records]


def model(readings: list[Reading], likelihoods: list | None = None) -> ModelAnswers:
    """A model's answers; without option likelihoods the table has no option AUC rows."""
    answers = [Answer("", reading) for reading in readings]
    return ModelAnswers(answers, likelihoods or [None] * len(readings))


def test_the_baseline_answers_each_group_with_its_most_common_answer() -> None:
    records = [
        *classification([2, 2, 0, 1]),
        *classification([0, 0, 1], lang="zh"),
        *closed_vqa(["no", "yes", "no"]),
        sample(9, "vqa", "en", {"question": "Modality?", "answer": "CT"}),
        sample(10, "vqa", "en", {"question": "Modality?", "answer": "x-ray"}),
        sample(11, "vqa", "en", {"question": "Organ?", "answer": "x-ray"}),
        sample(12, "report", "en", {"report": "No acute findings."}),
    ]
    positions, readings = majority_baseline(records)
    assert positions == list(range(13))  # the report has no constant answer to score
    answers = [reading.strict for reading in readings]
    assert answers == [2, 2, 2, 2, 0, 0, 0, 1, 1, 1, "x-ray", "x-ray", "x-ray"]
    assert all(reading.well_formed for reading in readings)


def test_a_constant_answer_ties_the_baseline_and_an_image_reader_beats_it() -> None:
    records = classification([0] * 40 + [1] * 20)
    constant = [Reading(0, 0)] * len(records)
    rows = scored_rows(records, model(constant), model(constant))
    accuracy = next(r for r in rows if r["metric"] == "accuracy")
    assert accuracy[MAJORITY] == accuracy[FINAL] == 40 / 60
    assert accuracy[VS_MAJORITY] == [0.0, 0.0] and established(accuracy, VS_MAJORITY) == 0

    rows = scored_rows(records, model(constant), model(right_answers(records)))
    accuracy = next(r for r in rows if r["metric"] == "accuracy")
    assert accuracy[FINAL] == 1.0 and established(accuracy, VS_MAJORITY) == 1
    others = [r for r in rows if r["metric"] != "accuracy"]
    assert others and all(r[MAJORITY] is None and VS_MAJORITY not in r for r in others)


def test_a_model_worse_than_a_constant_answer_is_marked_worse() -> None:
    records = closed_vqa(["yes"] * 30 + ["no"] * 10)
    wrong = [Reading(1 - r.strict, 1 - r.strict) for r in right_answers(records)]
    rows = scored_rows(records, model(wrong), model(wrong))
    closed = next(r for r in rows if r["metric"] == "closed_accuracy")
    assert closed[MAJORITY] == 0.75 and established(closed, VS_MAJORITY) == -1


def test_the_table_prints_the_baseline_and_both_differences() -> None:
    records = classification([0] * 40 + [1] * 20)
    rows = scored_rows(records, model([Reading(0, 0)] * 60), model(right_answers(records)))
    console = Console(record=True, width=200)
    print_metric_table(rows, (MAJORITY, ROUND_0, FINAL), "test", console, CHANGES)
    text = console.export_text()
    assert f"{FINAL} - {MAJORITY}" in text and f"{FINAL} - {ROUND_0}" in text
    line = next(line for line in text.splitlines() if "accuracy" in line and "lenient" not in line)
    assert "0.667" in line and "1.000" in line and "+0.333" in line


def test_option_auc_rows_show_a_model_that_learned_to_rank_beyond_its_interval() -> None:
    records = classification([0] * 30 + [1] * 20)
    constant = [Reading(0, 0)] * len(records)
    flat = [[-1.0, -1.0, -1.0] for _ in records]
    ranked = [[-1.0, -2.0, -3.0] if s.fields["label"] == 0 else [-2.0, -1.0, -3.0] for s in records]
    rows = scored_rows(records, model(constant, flat), model(constant, ranked))
    auc = next(r for r in rows if r["metric"] == "option_auc")
    assert auc[ROUND_0] == 0.5 and auc[FINAL] == 1.0
    assert not auc["headline"] and auc[MAJORITY] is None
    assert established(auc) == 1
    accuracy = next(r for r in rows if r["metric"] == "accuracy")
    assert accuracy[FINAL] == accuracy[MAJORITY] == 30 / 50
