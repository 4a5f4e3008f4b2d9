"""``benchmarks/question_prior.py``: closed answers read from the question's words alone."""

from __future__ import annotations

import dataclasses
from types import ModuleType

import pytest
import torch

from tests.conftest import load_benchmark, side_records


@pytest.fixture(scope="module")
def question_prior() -> ModuleType:
    return load_benchmark("question_prior.py")


def test_only_closed_vqa_questions_are_kept(question_prior) -> None:
    record = side_records(("left",))[0]
    closed = dataclasses.replace(
        record,
        task="vqa",
        fields={"question": "Is there a lesion?", "options": ["yes", "no"], "answer": "yes"},
    )
    opened = dataclasses.replace(closed, fields={"question": "Where?", "answer": "left lung"})
    assert question_prior.closed_questions([record, closed, opened]) == [closed]


def test_words_seen_often_enough_become_columns(question_prior) -> None:
    questions = ["Is the Heart enlarged?", "is the liver enlarged?", "Is this an MRI?"]
    known = question_prior.vocabulary(questions, min_count=2)
    assert known == ["is", "the", "enlarged"]
    rows = question_prior.bag_of_words([*questions, "Enlarged, enlarged!"], known)
    assert rows.tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 0], [0, 0, 1]]


def test_a_word_that_decides_the_answer_is_learned_and_chance_without_one(question_prior) -> None:
    linear_probe = load_benchmark("linear_probe.py")
    generator = torch.Generator().manual_seed(0)
    fillers = ["is", "there", "a", "mass", "the", "lung", "this", "an", "image"]

    def split(count: int, telling: bool) -> tuple[list[str], torch.Tensor]:
        labels = torch.randint(0, 2, (count,), generator=generator)
        picks = torch.randint(0, len(fillers), (count, 4), generator=generator)
        questions = [
            " ".join(fillers[i] for i in row) + (" enlarged" if telling and label else "")
            for row, label in zip(picks.tolist(), labels.tolist(), strict=True)
        ]
        return questions, labels

    for telling, lowest, highest in ((True, 0.95, 1.0), (False, 0.0, 0.7)):
        splits = {name: split(200, telling) for name in ("train", "val", "test")}
        known = question_prior.vocabulary(splits["train"][0], min_count=3)
        result = linear_probe.probe(
            {name: question_prior.bag_of_words(q, known) for name, (q, _) in splits.items()},
            {name: labels for name, (_, labels) in splits.items()},
            classes=2,
        )
        assert lowest <= result["test"]["accuracy"] <= highest
