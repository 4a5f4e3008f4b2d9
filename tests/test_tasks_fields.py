"""Each task checks its own manifest fields and maps its own coordinates between source pixels
(voxels) and the grid; errors name the field, the value and what is allowed."""

from __future__ import annotations

import pytest

from shared_model.sample import Geometry
from shared_model.tasks import TASK_NAMES, FieldError, get_task

IMAGE = Geometry(width=80, height=60, canvas=112)  # letterboxed: rows 14-98 of the canvas
VOLUME = Geometry(width=40, height=40, canvas=112, depth=6)


@pytest.mark.parametrize(
    ("name", "fields", "reason"),
    [
        ("caption", {"text": " "}, "field 'text' must be a non-empty string"),
        ("vqa", {"question": "Q?"}, "field 'answer' must be a non-empty string"),
        ("vqa", {"question": "Q?", "answer": "x", "options": ["a", "b"]}, "not one of the options"),
        ("vqa", {"question": "Q?", "answer": "a", "options": ["a"]}, "at least two strings"),
        ("classification", {"question": "Q?", "label": 0}, "'options' is required"),
        ("classification", {"question": "Q?", "options": ["a", "b"], "label": 2}, "not an index"),
        ("classification", {"question": "Q?", "options": ["a", "b"], "label": True}, "not an"),
        ("detection", {"target": "x", "boxes": [1, 2, 3, 4]}, "a box must be 4 or 6 numbers"),
        ("detection", {"target": "x", "boxes": [[5, 2, 3, 4]]}, "corner not below and right"),
        ("detection", {"target": "x"}, "'boxes' must be a list"),
        ("landmark", {"landmark": "x", "point": [1]}, "'point' must be [x, y] or [x, y, z]"),
    ],
)
def test_validation_names_the_field(name: str, fields: dict, reason: str) -> None:
    with pytest.raises(FieldError, match=reason.replace("[", r"\[")):
        get_task(name).validate(fields)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_one_image_except_compare(name: str) -> None:
    assert get_task(name).images == (2 if name == "compare" else 1)


def test_boxes_and_points_move_onto_the_grid_of_the_fitted_image() -> None:
    detection, landmark = get_task("detection"), get_task("landmark")
    boxes = detection.to_grid({"target": "x", "boxes": [[0, 0, 80, 60]]}, IMAGE)
    assert boxes["boxes"] == [[0.0, 125.0, 1000.0, 875.0]] and boxes["dimension"] == 2
    point = landmark.to_grid({"landmark": "x", "point": [20, 10, 3]}, VOLUME)
    assert point["point"] == [500.0, 250.0, 500.0] and point["dimension"] == 3
    none = detection.to_grid({"target": "x", "boxes": []}, VOLUME)
    assert none["dimension"] == 3
    assert "三维" in detection.prompt(none, "zh")  # a volume without boxes is still asked in 3D


@pytest.mark.parametrize(
    ("name", "fields", "geometry", "reason"),
    [
        ("detection", {"target": "x", "boxes": [[10, 10, 500, 20]]}, IMAGE, "outside the image"),
        ("detection", {"target": "x", "boxes": [[1, 1, 2, 2]]}, VOLUME, "2D coordinates"),
        ("landmark", {"landmark": "x", "point": [1, 1, 7]}, VOLUME, "outside the image"),
        ("landmark", {"landmark": "x", "point": [1, 1, 1]}, IMAGE, "given for a 2D image"),
    ],
)
def test_coordinates_outside_the_image_are_refused(
    name: str, fields: dict, geometry: Geometry, reason: str
) -> None:
    with pytest.raises(FieldError, match=reason):
        get_task(name).to_grid(fields, geometry)


def test_questions_at_inference_need_what_the_task_asks() -> None:
    assert get_task("classification").missing({"question": "Q?"}) == ["options"]
    with pytest.raises(FieldError, match="task landmark needs target"):
        get_task("landmark").question_fields({}, IMAGE)
    assert get_task("report").question_fields({}, IMAGE) == {}
    fields = get_task("vqa").question_fields({"question": "Q?", "options": ["a", "b"]}, IMAGE)
    assert get_task("vqa").parse("2:b", fields, "en") == 1
