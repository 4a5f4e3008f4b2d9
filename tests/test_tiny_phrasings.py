"""The tiny base's pretraining asks for each kind of answer in many wordings, in both languages.

A base this small answers only the phrasings it was shown in the format they ask for, so the
scenes must vary them; the answer must name the object as the question did.
"""

from __future__ import annotations

import random
import re

import pytest

from shared_model.tiny.phrasings import (
    BOX,
    BOX_WORDS,
    DESCRIBE,
    POINT,
    listed_question,
    object_name,
    request,
)
from shared_model.tiny.scenes import conversation

CJK = re.compile(r"[\u4e00-\u9fff]")
REQUESTS = {
    "box": lambda rng, zh: request(
        rng, BOX, zh, x="ring", box=BOX_WORDS["zh" if zh else "en"][rng.random() < 0.5]
    ),
    "point": lambda rng, zh: request(rng, POINT, zh, x="ring"),
    "describe": lambda rng, zh: request(rng, DESCRIBE, zh),
    "options": lambda rng, zh: listed_question(rng, "哪个？" if zh else "Which?", "0:a\n1:b", zh),
}


@pytest.mark.parametrize("kind", sorted(REQUESTS))
@pytest.mark.parametrize("zh", [False, True])
def test_each_request_comes_in_several_wordings_of_its_language(kind: str, zh: bool) -> None:
    rng = random.Random(0)
    wordings = {REQUESTS[kind](rng, zh) for _ in range(200)}
    assert len(wordings) >= 5, wordings
    assert all(bool(CJK.search(w)) == zh for w in wordings)


def test_option_lists_keep_their_lines_and_drop_empty_ones() -> None:
    rng = random.Random(1)
    for _ in range(100):
        text = listed_question(rng, "Which shape is shown?", "0:circle\n1:ring", zh=False)
        lines = text.splitlines()
        assert "" not in lines and lines[-2:] != ["0:circle"]
        assert "0:circle\n1:ring" in text and "Which shape is shown?" in lines[0]


def test_the_object_is_named_by_its_shape_or_a_generic_word() -> None:
    rng = random.Random(2)
    names = {object_name(rng, "ring", zh=False) for _ in range(200)}
    assert "ring" in names and len(names) >= 5


def test_a_box_answer_names_the_object_as_the_question_did() -> None:
    rng = random.Random(3)
    boxes = [
        c for c in (conversation(rng, 56, None, 1) for _ in range(400)) if "box_start" in c.answer
    ]
    assert len(boxes) > 20
    for chat in boxes:
        name = re.search(r"<\|object_ref_start\|>(.+?)<\|object_ref_end\|>", chat.answer).group(1)
        assert name in chat.question, (chat.question, chat.answer)
