"""Option separation: each closed task's option answers, their likelihoods and the option AUC."""

from __future__ import annotations

import pytest
import torch

from shared_model.inputs import IGNORE_INDEX, collate, encode_sample
from shared_model.loading import load_base
from shared_model.loss import answer_token_loss, answer_window
from shared_model.option_scores import OptionShares, option_auc, option_log_likelihoods
from shared_model.sample import Geometry, Sample
from shared_model.tasks import get_task
from tests.conftest import lesion_image

CLASSES = {"question": "Diagnosis?", "options": ["normal", "pneumonia"]}
SIDES_ZH = ["左侧", "右侧"]


def record(number: int, task: str, fields: dict, lang: str = "en") -> Sample:
    image = lesion_image("left", seed=number)
    geometry = Geometry(112, 112, 112)
    return Sample(f"r{number}", f"p{number}", task, lang, "test", (image,), (geometry,), fields)


def classified(number: int, label: int, options: list[str] | None = None) -> Sample:
    fields = {**CLASSES, "label": label, **({"options": options} if options else {})}
    return record(number, "classification", fields)


def test_each_closed_task_writes_every_option_as_its_own_answer() -> None:
    classification, vqa = get_task("classification"), get_task("vqa")
    fields = {**CLASSES, "label": 1}
    assert classification.option_targets(fields, "en") == ["0:normal", "1:pneumonia"]
    zh = {"question": "诊断？", "options": ["正常", "肺炎"], "label": 0}
    assert classification.option_targets(zh, "zh") == ["0：正常", "1：肺炎"]
    closed = {"question": "Left?", "answer": "no", "options": ["yes", "no"]}
    assert vqa.option_targets(closed, "en") == ["1:yes", "2:no"]
    targets = vqa.option_targets(closed, "en")
    assert targets[vqa.reference(closed)] == vqa.target(closed, "en")
    assert vqa.option_targets({"question": "What modality?", "answer": "CT"}, "en") is None
    box = {"target": "lesion", "boxes": [[10, 10, 20, 20]]}
    assert get_task("detection").option_targets(box, "en") is None


@pytest.mark.parametrize(
    ("right", "wrong", "expected"),
    [((-1.0, -5.0), (-5.0, -1.0), 1.0), ((-5.0, -1.0), (-1.0, -5.0), 0.0)],
)
def test_option_auc_ranks_records_by_the_share_of_each_option(right, wrong, expected) -> None:
    samples = [classified(i, i % 2) for i in range(6)]
    likelihoods = [list(right) if s.fields["label"] == 0 else list(wrong) for s in samples]
    assert option_auc(samples, likelihoods) == {"classification/en/option_auc": expected}


def test_prepared_shares_score_a_draw_as_the_drawn_records_would() -> None:
    samples = [classified(i, i % 2) for i in range(8)]
    samples += [classified(8 + i, i % 3, ["a", "b", "c"]) for i in range(6)]
    likelihoods = [
        [-1.0 - (i % 5), -2.0 + (i % 3), -3.0][: len(s.fields.get("options", "ab"))]
        for i, s in enumerate(samples)
    ]
    likelihoods[3] = None
    shares = OptionShares(samples, likelihoods)
    for drawn in ([0, 0, 1, 2, 3, 5, 8, 9, 10, 11], list(range(len(samples))), [1, 1, 2, 12, 13]):
        picked = [samples[i] for i in drawn]
        assert shares.auc(drawn) == option_auc(picked, [likelihoods[i] for i in drawn])
    assert shares.auc() == option_auc(samples, likelihoods)


def test_option_auc_is_a_half_for_a_model_that_ranks_every_record_alike() -> None:
    samples = [classified(i, i % 2) for i in range(6)]
    likelihoods = [[-2.0, -1.0] for _ in samples]
    assert option_auc(samples, likelihoods)["classification/en/option_auc"] == pytest.approx(0.5)


def test_option_auc_keeps_option_lists_apart_and_skips_what_has_no_options() -> None:
    first = [classified(i, i % 2) for i in range(4)]
    second = [classified(10 + i, i % 2, options=["benign", "malignant"]) for i in range(4)]
    perfect = [[-1.0, -3.0] if s.fields["label"] == 0 else [-3.0, -1.0] for s in first]
    reversed_ = [[-3.0, -1.0] if s.fields["label"] == 0 else [-1.0, -3.0] for s in second]
    open_question = record(20, "vqa", {"question": "What modality?", "answer": "CT"})
    samples = [*first, *second, open_question]
    scores = option_auc(samples, [*perfect, *reversed_, None])
    assert scores == {"classification/en/option_auc": pytest.approx(0.5)}
    one_sided = [classified(30 + i, 0) for i in range(3)]
    assert option_auc(one_sided, [[-1.0, -2.0]] * 3) == {}


def test_the_right_options_likelihood_is_the_training_loss_of_its_answer(tiny_spec) -> None:
    model, processor = load_base(tiny_spec)
    model.eval()
    samples = [
        classified(1, 1),
        record(2, "vqa", {"question": "Left?", "answer": "yes", "options": ["yes", "no"]}, "en"),
        record(
            3, "vqa", {"question": "哪一侧？", "answer": "右侧", "options": ["左侧", "右侧"]}, "zh"
        ),
        record(4, "vqa", {"question": "What modality?", "answer": "CT"}),
    ]
    likelihoods = option_log_likelihoods(model, processor, tiny_spec, samples, batch_size=3)
    assert likelihoods[3] is None
    for sample, scores in zip(samples[:3], likelihoods[:3], strict=True):
        task = get_task(sample.task)
        assert len(scores) == len(sample.fields["options"])
        example = encode_sample(processor, sample, tiny_spec)
        inputs = collate([example], processor.tokenizer.pad_token_id).inputs
        labels = inputs.pop("labels")
        window = answer_window(labels)
        with torch.no_grad():
            logits = model(**inputs, logits_to_keep=window).logits
        mean_loss = answer_token_loss(logits, labels[:, -window:]).item()
        answer_tokens = int((labels != IGNORE_INDEX).sum())
        expected = -mean_loss * answer_tokens
        assert scores[task.reference(sample.fields)] == pytest.approx(expected, rel=1e-4)
        assert all(score < 0 for score in scores)
