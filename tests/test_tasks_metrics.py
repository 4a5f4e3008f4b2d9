"""Task metrics against hand-computed values; ``None`` predictions are misses. Readings here
are well-formed (strict and lenient agree) unless a test says otherwise."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from shared_model.metrics import (
    balanced_accuracy,
    box_iou,
    count_matches,
    macro_f1,
    token_recall,
    tokenize,
)
from shared_model.tasks import TASK_NAMES, Reading, get_task
from shared_model.tasks.landmark import LandmarkTask
from shared_model.tasks.scoring import is_count

TEXT_TASKS = ("report", "caption", "compare")


RECORDS = {
    "caption": {"text": "Chest radiograph, frontal view."},
    "compare": {"text": "The nodule has grown."},
    "vqa": {"question": "Is this normal?", "answer": "no", "options": ["yes", "no"]},
    "classification": {"question": "Diagnosis?", "options": ["normal", "pneumonia"], "label": 1},
    "report": {"report": "No acute cardiopulmonary abnormality."},
    "detection": {"target": "nodule", "boxes": [[10, 20, 30, 40]]},
    "landmark": {"landmark": "sella", "point": [10, 20]},
}
CHINESE_TEXT = {
    "caption": {"text": "胸部X光正位片。"},
    "compare": {"text": "结节增大。"},
    "report": {"report": "心肺未见急性异常。"},
}
"""A Chinese record's free text is Chinese (free text is well-formed in its own language)."""


def read(values: Sequence[object]) -> list[Reading]:
    """Readings whose strict and lenient answers are both ``values``."""
    return [Reading(value, value) for value in values]


def test_tokenize_splits_chinese_into_characters() -> None:
    assert tokenize("Left LUNG, 左肺CT：3.5cm") == ["left", "lung", "左", "肺", "ct", "3", "5cm"]


@pytest.mark.parametrize("name", TEXT_TASKS)
@pytest.mark.parametrize(
    ("lang", "prediction", "reference", "bleu1", "bleu4", "rouge_l"),
    [
        # identical texts
        ("en", "The heart is normal.", "The heart is normal.", 1.0, 1.0, 1.0),
        # 6 tokens each: 1-4 gram precisions 5/6, 3/5, 2/4, 1/3; LCS 5
        (
            "en",
            "the heart size is enlarged today",
            "the heart size is normal today",
            5 / 6,
            (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25,
            5 / 6,
        ),
        # short hypothesis: precision 1, brevity penalty exp(1 - 4/2); LCS 2 -> F = 2/3
        ("en", "the heart", "the heart is normal", math.exp(-1), None, 2 / 3),
        # sacrebleu's 13a keeps case and punctuation: 4 of 5 tokens ("." unmatched), no BP
        ("en", "The heart is normal.", "the heart is normal !", 3 / 5, None, 3 / 5),
        # Chinese on characters: 3 of 4 characters match, BP exp(1 - 6/4); LCS 3 -> P 3/4, R 1/2
        ("zh", "心脏增大", "心脏大小正常", 0.75 * math.exp(-0.5), None, 0.6),
        # nothing in common
        ("zh", "no acute findings", "心脏大小正常", 0.0, 0.0, 0.0),
    ],
)
def test_text_scores(
    name: str,
    lang: str,
    prediction: str,
    reference: str,
    bleu1: float,
    bleu4: float | None,
    rouge_l: float,
) -> None:
    scores = get_task(name).score(read([prediction]), [reference], lang)
    assert scores["bleu1"] == pytest.approx(bleu1, abs=1e-4)
    assert scores["rouge_l"] == pytest.approx(rouge_l, abs=1e-6)
    if bleu4 is not None:
        assert scores["bleu4"] == pytest.approx(bleu4, abs=1e-4)
    assert scores["count"] == 1.0


def test_text_miss_is_an_empty_answer() -> None:
    scores = get_task("report").score(
        read(["the heart is normal", None]), ["the heart is normal", "no effusion"], "en"
    )
    # corpus BLEU-1: 4 of 4 hypothesis tokens match, brevity penalty exp(1 - 6/4)
    assert scores["bleu1"] == pytest.approx(math.exp(-0.5), abs=1e-4)
    assert scores["rouge_l"] == pytest.approx(0.5)
    assert scores["misses"] == 1.0 and scores["well_formed"] == 0.5
    nothing = get_task("caption").score(read([None, None]), ["a nodule", "一个结节"], "zh")
    assert nothing["bleu1"] == nothing["bleu4"] == nothing["rouge_l"] == 0.0


def test_vqa_scores() -> None:
    task = get_task("vqa")
    predictions = [0, 0, None, "the left lung", "肺", None]
    references = [0, 1, 1, "left lung", "右肺", "yes"]
    scores = task.score(read(predictions), references, "en")
    assert scores["closed_accuracy"] == pytest.approx(1 / 3)
    assert scores["open_recall"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert scores["closed_count"] == 3.0 and scores["open_count"] == 3.0
    assert scores["count"] == 6.0 and scores["misses"] == 2.0


def test_vqa_perfect_zero_and_empty_groups() -> None:
    task = get_task("vqa")
    perfect = task.score(read([1, "left lung"]), [1, "left lung"], "en")
    assert perfect["closed_accuracy"] == 1.0 and perfect["open_recall"] == 1.0
    zero = task.score(read([None, None]), [1, "left lung"], "en")
    assert zero["closed_accuracy"] == 0.0 and zero["open_recall"] == 0.0
    only_open = task.score(read(["左肺"]), ["左肺"], "zh")
    assert "closed_accuracy" not in only_open and only_open["closed_count"] == 0.0


def test_token_recall_counts_reference_tokens() -> None:
    assert token_recall("right upper lobe", "upper lobe of the lung") == pytest.approx(2 / 5)
    assert token_recall("左肺上叶", "右肺上叶") == pytest.approx(3 / 4)
    assert token_recall(None, "yes") == 0.0


def test_classification_scores() -> None:
    # class 0: tp 1 fn 1 -> F1 2/3; class 1: tp 1 fp 1 -> 2/3; class 2: fn 1 -> 0
    scores = get_task("classification").score(read([0, 1, 1, None]), [0, 0, 1, 2], "en")
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0.0) / 3)
    # recall: class 0 1/2, class 1 1/1, class 2 0/1 (its answer unreadable)
    assert scores["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert scores["misses"] == 1.0


@pytest.mark.parametrize(
    ("predictions", "accuracy", "f1"),
    [([0, 1, 2, 1], 1.0, 1.0), ([None, None, None, None], 0.0, 0.0), ([1, 2, 0, 0], 0.0, 0.0)],
)
def test_classification_perfect_and_zero(
    predictions: list[int | None], accuracy: float, f1: float
) -> None:
    scores = get_task("classification").score(read(predictions), [0, 1, 2, 1], "zh")
    assert scores["accuracy"] == accuracy and scores["macro_f1"] == f1


def test_balanced_accuracy_gives_a_constant_answer_chance_however_common_its_class() -> None:
    references = [1] * 9 + [0]
    majority = get_task("classification").score(read([1] * 10), references, "en")
    assert majority["accuracy"] == pytest.approx(0.9)
    assert majority["balanced_accuracy"] == pytest.approx(0.5)
    assert balanced_accuracy([0] * 10, references) == pytest.approx(0.5)
    assert balanced_accuracy(references, references) == 1.0
    assert balanced_accuracy([None] * 10, references) == 0.0


def test_macro_f1_ignores_classes_absent_from_references() -> None:
    # class 0: tp 1 fn 1 -> 2/3; the predicted 7 only costs class 0
    assert macro_f1([0, 7], [0, 0]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 5, 15, 15), 25 / 175),
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
        ((0, 0, 10, 10), (0, 0, 10, 5), 0.5),
        ((0, 0, 0, 10, 10, 10), (5, 5, 5, 15, 15, 15), 125 / 1875),
        ((0, 0, 0, 10, 10, 10), (0, 0, 0, 10, 10, 5), 0.5),
        ((0, 0, 10, 10), (0, 0, 0, 10, 10, 10), 0.0),
    ],
)
def test_box_iou(a: tuple, b: tuple, iou: float) -> None:
    assert box_iou(a, b) == pytest.approx(iou)
    assert box_iou(b, a) == pytest.approx(iou)
    assert box_iou(list(a), list(b)) == box_iou(a, b)  # boxes as lists, as JSON gives them


def test_macro_f1_counts_as_the_per_class_definition_does() -> None:
    rng = random.Random(0)
    for _ in range(50):
        references = [rng.randrange(4) for _ in range(rng.randrange(1, 30))]
        predictions = [rng.choice([None, 0, 1, 2, 3, 5]) for _ in references]
        pairs = list(zip(predictions, references, strict=True))
        expected = []
        for label in sorted(set(references)):
            tp = sum(p == label == r for p, r in pairs)
            fp = sum(p == label != r for p, r in pairs)
            fn = sum(r == label != p for p, r in pairs)
            expected.append(2 * tp / (2 * tp + fp + fn))
        assert macro_f1(predictions, references) == pytest.approx(sum(expected) / len(expected))


def test_detection_scores() -> None:
    references = [
        [(0.0, 0.0, 10.0, 10.0)],
        [(0.0, 0.0, 10.0, 10.0), (20.0, 20.0, 30.0, 30.0)],
        [(100.0, 100.0, 200.0, 200.0)],
        [],
    ]
    predictions = [
        [(0.0, 0.0, 10.0, 10.0), (50.0, 50.0, 60.0, 60.0)],  # 1 hit, 1 false positive
        [(5.0, 5.0, 15.0, 15.0)],  # IoU 1/7 with the first box: a false positive
        None,  # miss
        [],
    ]
    scores = get_task("detection").score(read(predictions), references, "en")
    assert scores["mean_iou"] == pytest.approx((1.0 + 1 / 7 + 0.0 + 0.0) / 4)
    assert scores["precision50"] == pytest.approx(1 / 3)
    assert scores["recall50"] == pytest.approx(1 / 4)
    assert scores["map50"] == pytest.approx(1 / 12)
    assert scores["count"] == 4.0 and scores["misses"] == 1.0


def test_detection_matching_is_one_to_one() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    assert count_matches([box, box], [box], 0.5) == 1
    scores = get_task("detection").score(read([[box, box]]), [[box]], "en")
    assert scores["precision50"] == 0.5 and scores["recall50"] == 1.0
    assert scores["map50"] == 0.5 and scores["mean_iou"] == 1.0


@pytest.mark.parametrize("dimension", [2, 3])
def test_detection_perfect_and_zero(dimension: int) -> None:
    box = tuple(float(v) for v in range(dimension)) + (500.0,) * dimension
    task = get_task("detection")
    perfect = task.score(read([[box]]), [[box]], "zh")
    assert perfect["mean_iou"] == 1.0 and perfect["map50"] == 1.0
    zero = task.score(read([None]), [[box]], "zh")
    assert zero["mean_iou"] == 0.0 and zero["map50"] == 0.0


def test_detection_without_reference_boxes_has_no_box_metrics() -> None:
    scores = get_task("detection").score(read([[(0.0, 0.0, 1.0, 1.0)]]), [[]], "en")
    assert "map50" not in scores and scores["count"] == 1.0


def test_landmark_scores() -> None:
    references = [(0.0, 0.0), (100.0, 100.0), (500.0, 500.0)]
    predictions = [(3.0, 4.0), (100.0, 130.0), None]
    scores = get_task("landmark").score(read(predictions), references, "en")
    assert scores["mre"] == pytest.approx((5.0 + 30.0 + 1000.0 * math.sqrt(2)) / 3)
    assert scores["sdr"] == pytest.approx(1 / 3)
    wider = LandmarkTask(radius=30.0).score(read(predictions), references, "en")
    assert wider["sdr"] == pytest.approx(2 / 3)


def test_landmark_perfect_zero_and_3d_miss() -> None:
    task = get_task("landmark")
    perfect = task.score(read([(1.0, 2.0, 3.0)]), [(1.0, 2.0, 3.0)], "zh")
    assert perfect["mre"] == 0.0 and perfect["sdr"] == 1.0
    zero = task.score(read([None]), [(1.0, 2.0, 3.0)], "zh")
    assert zero["mre"] == pytest.approx(1000.0 * math.sqrt(3)) and zero["sdr"] == 0.0
    assert LandmarkTask(radius=1e9).score(read([None]), [(1.0, 2.0)], "en")["sdr"] == 0.0


def test_landmark_radius_must_be_positive() -> None:
    with pytest.raises(ValueError, match="radius must be positive"):
        LandmarkTask(radius=0.0)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_score_refuses_length_mismatch(name: str) -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        get_task(name).score(read([None, None]), [get_reference(name)], "en")


@pytest.mark.parametrize("name", TASK_NAMES)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_rendered_targets_score_perfectly(name: str, lang: str) -> None:
    task = get_task(name)
    fields = {**RECORDS[name], **(CHINESE_TEXT.get(name, {}) if lang == "zh" else {})}
    reference = task.reference(fields)
    reading = task.read(task.target(fields, lang), fields, lang)
    scores = task.score([reading], [reference], lang)
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["count"] == 1.0 and scores["misses"] == 0.0
    perfect = {k: v for k, v in scores.items() if not is_count(k)}
    assert task.headline in perfect
    assert set(perfect) <= {m.name for m in task.scored_metrics()}  # open VQA needs open records
    assert all(v == (0.0 if k == "mre" else 1.0) for k, v in perfect.items())
    empty = task.score([], [], lang)
    assert empty["count"] == 0.0 and all(is_count(k) for k in empty)


def get_reference(name: str) -> object:
    """The structured reference of the task's example record."""
    return get_task(name).reference(RECORDS[name])
