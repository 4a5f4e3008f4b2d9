"""Strict readings: only the task's own format counts for the headline score.

The malformed answers here include those an exported model gave and the lenient reader had
scored as right: ``3: at the right:]`` for ``3:cyst``, ``1：是`` (a VQA answer) for ``1：结节``,
and ``[55,3,743,433,743]`` or ``[5,23]`` for a 2D box.
"""

from __future__ import annotations

import random

import pytest

from shared_model.tasks import get_task
from shared_model.tasks.coords import format_point

CYST = {"question": "Finding?", "options": ["solid", "mixed", "septated", "cyst"], "label": 3}
NODULE_ZH = {"question": "这是什么？", "options": ["正常", "结节"], "label": 1}
EFFUSION = {"question": "Effusion?", "answer": "no", "options": ["yes", "no"]}
EFFUSION_ZH = {"question": "积液？", "answer": "否", "options": ["是", "否"]}
BOX_2D = {"target": "nodule", "boxes": [[120, 81, 260, 211]], "dimension": 2}
BOX_3D = {"target": "tumour", "boxes": [[1, 2, 3, 40, 50, 60]], "dimension": 3}
NO_BOX_2D = {"target": "nodule", "boxes": [], "dimension": 2}
POINT_2D = {"landmark": "sella", "point": [512, 401], "dimension": 2}
POINT_3D = {"landmark": "carina", "point": [250, 300, 480], "dimension": 3}
REF = "<|object_ref_start|>nodule<|object_ref_end|>"


def box(text: str) -> str:
    return f"<|box_start|>{text}<|box_end|>"


@pytest.mark.parametrize(
    ("name", "fields", "lang", "text", "expected"),
    [
        ("classification", CYST, "en", "3:cyst", 3),
        ("classification", CYST, "en", "  3: Cyst ", 3),  # case and white space around the text
        ("classification", CYST, "en", "３:ｃｙｓｔ", None),  # full-width digits are not the format
        ("classification", CYST, "en", "0:solid", 0),  # classes are numbered from 0
        ("classification", NODULE_ZH, "zh", "1：结节", 1),
        ("vqa", EFFUSION, "en", "2:no", 1),  # options of closed VQA from 1
        ("vqa", EFFUSION_ZH, "zh", "2：否", 1),
        ("vqa", EFFUSION, "en", "2:no\n", 1),
    ],
)
def test_strict_choice_reads_the_format(
    name: str, fields: dict, lang: str, text: str, expected: int | None
) -> None:
    assert get_task(name).parse(text, fields, lang) == expected


@pytest.mark.parametrize(
    ("name", "fields", "lang", "text"),
    [
        ("classification", CYST, "en", "3: at the right:]"),  # number right, text not an option
        ("classification", NODULE_ZH, "zh", "1：是"),  # a VQA answer for option 1 (结节)
        ("classification", CYST, "en", "3：cyst"),  # Chinese colon in an English answer
        ("classification", NODULE_ZH, "zh", "1:结节"),  # ASCII colon in a Chinese answer
        ("classification", CYST, "en", "3:cyst, probably"),  # extra text
        ("classification", CYST, "en", "The answer is 3:cyst"),
        ("classification", CYST, "en", "3:cyst\n0:solid"),
        ("classification", CYST, "en", "4:cyst"),  # out of range (classes 0-3)
        ("classification", CYST, "en", "2:cyst"),  # the number names another class
        ("classification", CYST, "en", "03:cyst"),  # leading zero
        ("classification", CYST, "en", "-3:cyst"),
        ("classification", CYST, "en", "3 :cyst"),
        ("classification", CYST, "en", "3"),  # number alone
        ("classification", CYST, "en", "cyst"),  # text alone
        ("classification", CYST, "en", ""),
        ("vqa", EFFUSION, "en", "0:yes"),  # closed VQA has no option 0
        ("vqa", EFFUSION, "en", "3:no"),
        ("vqa", EFFUSION, "en", "no"),
        ("vqa", EFFUSION, "en", "2:no."),
        ("vqa", EFFUSION_ZH, "zh", "2:否"),
        ("vqa", EFFUSION_ZH, "zh", "（2）否"),
    ],
)
def test_strict_choice_refuses_malformed_answers(
    name: str, fields: dict, lang: str, text: str
) -> None:
    task = get_task(name)
    assert task.parse(text, fields, lang) is None
    assert not task.read(text, fields, lang).well_formed


def test_malformed_choices_the_export_gave_are_wrong_for_the_headline() -> None:
    task = get_task("classification")
    readings = [task.read("3: at the right:]", CYST, "en"), task.read("1：是", NODULE_ZH, "zh")]
    assert [r.lenient for r in readings] == [3, 1]  # what the lenient reader made of them
    scores = task.score(readings[:1], [3], "en")
    assert scores["accuracy"] == 0.0 and scores["accuracy_lenient"] == 1.0
    assert scores["well_formed"] == 0.0 and scores["misses"] == 0.0


@pytest.mark.parametrize(
    ("fields", "lang", "text", "expected"),
    [
        (BOX_2D, "en", box("(120,81),(260,211)"), [(120, 81, 260, 211)]),
        (BOX_2D, "en", REF + box("(120,81),(260,211)"), [(120, 81, 260, 211)]),
        (BOX_2D, "en", box("( 120, 81 ), (260,211)"), [(120, 81, 260, 211)]),
        (BOX_2D, "en", box("(1,2),(3,4)") + " " + box("(5,6),(7,8)"), [(1, 2, 3, 4), (5, 6, 7, 8)]),
        (BOX_2D, "en", box("(0,0),(1000,1000)"), [(0, 0, 1000, 1000)]),
        (BOX_2D, "en", box("(5,5),(5,9)"), [(5, 5, 5, 9)]),  # a box quantised to a line
        (BOX_3D, "zh", box("[(1,2,3),(40,50,60)]"), [(1, 2, 3, 40, 50, 60)]),
        (NO_BOX_2D, "en", REF + "none", []),
        (NO_BOX_2D, "zh", REF + "无", []),
        (NO_BOX_2D, "en", "None", []),
    ],
)
def test_strict_boxes_read_the_grounding_format(
    fields: dict, lang: str, text: str, expected: list
) -> None:
    assert get_task("detection").parse(text, fields, lang) == expected


@pytest.mark.parametrize(
    ("fields", "lang", "text"),
    [
        (BOX_2D, "en", "[55,3,743,433,743]"),  # five numbers
        (BOX_2D, "en", "[5,23]"),  # a point, not a box
        (BOX_2D, "en", box("[5,23]")),
        (BOX_2D, "en", "(120,81),(260,211)"),  # no box tokens
        (BOX_2D, "en", box("120,81,260,211")),
        (BOX_2D, "en", box("(260,211),(120,81)")),  # swapped corners
        (BOX_2D, "en", box("(120,211),(260,81)")),  # swapped on one axis
        (BOX_2D, "en", box("(120,81),(260,1001)")),  # off the grid
        (BOX_2D, "en", box("(-5,81),(260,211)")),
        (BOX_2D, "en", box("(120.5,81),(260,211)")),  # the grid is integers
        (BOX_2D, "en", box("（120，81），（260，211）")),  # full-width punctuation
        (BOX_2D, "en", box("(120,81),(260,211)") + " nodule"),  # extra text
        (BOX_2D, "en", "The nodule: " + box("(120,81),(260,211)")),
        (BOX_2D, "en", box("(1,2),(3,4)") + box("(5,6),(7")),  # a cut-off second box
        (BOX_2D, "en", box("[(1,2,3),(40,50,60)]")),  # 3D box for a 2D image
        (BOX_3D, "en", box("(1,2),(40,50)")),  # 2D box for a volume
        (BOX_3D, "en", "[(1,2,3),(40,50,60)]"),  # 3D box without its tokens
        (BOX_2D, "en", "<|object_ref_start|><|object_ref_end|>" + box("(1,2),(3,4)")),
        (NO_BOX_2D, "zh", REF + "none"),  # another language's "none"
        (NO_BOX_2D, "en", REF + "nothing"),
        (NO_BOX_2D, "en", "none."),
        (NO_BOX_2D, "en", ""),
    ],
)
def test_strict_boxes_refuse_malformed_answers(fields: dict, lang: str, text: str) -> None:
    assert get_task("detection").parse(text, fields, lang) is None


@pytest.mark.parametrize(
    ("fields", "text", "expected"),
    [
        (POINT_2D, "[512,401]", (512, 401)),
        (POINT_2D, " [ 512 , 401 ] ", (512, 401)),
        (POINT_2D, "[0,1000]", (0, 1000)),
        (POINT_3D, "[250,300,480]", (250, 300, 480)),
    ],
)
def test_strict_point_reads_the_format(fields: dict, text: str, expected: tuple) -> None:
    assert get_task("landmark").parse(text, fields, "zh") == expected


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        (POINT_2D, "[512,401,3]"),  # three coordinates on a 2D image
        (POINT_3D, "[250,300]"),
        (POINT_2D, "[1001,3]"),  # off the grid
        (POINT_2D, "[-1,3]"),
        (POINT_2D, "(512,401)"),  # another bracket
        (POINT_2D, "［512，401］"),
        (POINT_2D, "[512.0,401]"),
        (POINT_2D, "[0512,401]"),
        (POINT_2D, "sella: [512,401]"),
        (POINT_2D, "[512,401] [5,6]"),
        (POINT_2D, "512,401"),
    ],
)
def test_strict_point_refuses_malformed_answers(fields: dict, text: str) -> None:
    assert get_task("landmark").parse(text, fields, "en") is None


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("dimension", [2, 3])
def test_strict_reading_of_formatted_coordinates_is_the_reference(
    lang: str, dimension: int
) -> None:
    rng = random.Random(dimension)
    detection, landmark = get_task("detection"), get_task("landmark")
    for _ in range(200):
        boxes = [[rng.uniform(-50, 1050) for _ in range(2 * dimension)] for _ in range(3)]
        fields = {"target": "x", "boxes": boxes[: rng.randint(0, 3)], "dimension": dimension}
        assert detection.parse(detection.target(fields, lang), fields, lang) == (
            detection.reference(fields)
        )
        point = {"landmark": "x", "point": boxes[0][:dimension]}
        assert landmark.parse(format_point(point["point"]), point, lang) == (
            landmark.reference(point)
        )
        assert all(v.is_integer() for b in detection.reference(fields) for v in b)


@pytest.mark.parametrize(("name", "base"), [("vqa", 1), ("classification", 0)])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_strict_reading_of_every_formatted_option_is_its_index(
    name: str, base: int, lang: str
) -> None:
    options = ["Yes", "no", "3:1 ratio", "左肺", "lung  base"]
    task = get_task(name)
    for index, option in enumerate(options):
        fields = {"question": "Q?", "options": options, "answer": option, "label": index}
        text = task.target(fields, lang)
        assert text.startswith(f"{index + base}{'：' if lang == 'zh' else ':'}")
        assert task.parse(text, fields, lang) == index


def test_free_text_is_well_formed_when_not_empty() -> None:
    task = get_task("report")
    assert task.read(" No effusion. ", {}, "en").strict == "No effusion."
    assert task.read("所见：双肺清晰。CT 正常。", {}, "zh").strict == "所见：双肺清晰。CT 正常。"
    assert task.read("X光图像显示右侧肺部有肿块。", {}, "zh").well_formed  # names the modality
    assert task.read("CT showing a mass in the left lung.", {}, "en").well_formed
    assert not task.read("  \n", {}, "en").well_formed


@pytest.mark.parametrize("name", ["report", "caption", "compare"])
@pytest.mark.parametrize(
    ("answer", "lang"),
    [
        ("[500,220]", "zh"),  # a point an exported model wrote for a Chinese report request
        ("[500,220]", "en"),
        (f"{REF}{box('(1,2),(3,4)')}", "en"),  # a grounded box, not prose
        ("<|object_ref_start|>病灶<|object_ref_end|>", "zh"),
        ("Findings: lungs are clear.", "zh"),  # an English answer to a Chinese request
        ("所见：双. Impression: lung.", "zh"),  # turns English: an exported model's report
        ("所见：双 mass in the left lung.", "zh"),
        ("所见：双肺清晰。", "en"),
        ("1：是", "en"),
        ("12 / 34.", "en"),
    ],
)
def test_free_text_in_another_tasks_format_or_language_is_malformed(name, answer, lang) -> None:
    reading = get_task(name).read(answer, {}, lang)
    assert not reading.well_formed
    assert reading.lenient == answer.strip()  # the lenient twin still scores it
