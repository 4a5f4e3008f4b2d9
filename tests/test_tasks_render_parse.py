"""Task templates, target text and lenient readers: parse(target(x)) == reference(x), and the
lenient reading understands what a reader would (strict readings: test_tasks_strict.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client.config import STAGES, Policy
from shared_model.tasks import (
    ALIGN_TASKS,
    INSTRUCT_TASKS,
    STAGE_TASKS,
    TASK_NAMES,
    Task,
    get_task,
)
from shared_model.tasks.text import has_cjk

REPO = Path(__file__).resolve().parents[1]

# (task, lang, fields) with realistic records of both languages.
CASES = [
    ("caption", "en", {"text": "Axial CT of the chest showing a right lower lobe nodule."}),
    ("caption", "zh", {"text": "胸部轴位CT，右肺下叶可见结节。"}),
    ("compare", "en", {"text": "The effusion has decreased compared with the prior image."}),
    ("compare", "zh", {"text": "与前片相比，胸腔积液减少。"}),
    (
        "vqa",
        "en",
        {"question": "Is there a pleural effusion?", "answer": "No", "options": ["Yes", "No"]},
    ),
    ("vqa", "zh", {"question": "是否存在胸腔积液？", "answer": "是", "options": ["是", "否"]}),
    ("vqa", "en", {"question": "Which organ is abnormal?", "answer": "Left lung"}),
    ("vqa", "zh", {"question": "哪个器官异常？", "answer": "左肺"}),
    ("vqa", "en", {"question": "How many nodules?", "answer": 2, "options": ["1", "2", "3"]}),
    (
        "classification",
        "en",
        {
            "question": "What does this chest X-ray show?",
            "options": ["normal", "pneumonia"],
            "label": 1,
        },
    ),
    (
        "classification",
        "zh",
        {"question": "这张胸片显示什么？", "options": ["正常", "肺炎", "结核"], "label": 2},
    ),
    ("report", "en", {"report": "The heart size is normal. No focal consolidation."}),
    ("report", "zh", {"report": "心脏大小正常，双肺未见实变。"}),
    ("detection", "en", {"target": "nodule", "boxes": [[120.4, 80.6, 260.2, 210.5]]}),
    ("detection", "zh", {"target": "肺炎", "boxes": [[10, 20, 30, 40], [300, 310, 100, 90]]}),
    ("detection", "en", {"target": "liver tumour", "boxes": [[1.2, 2, 3, 40, 50.7, 60]]}),
    ("detection", "zh", {"target": "肿瘤", "boxes": [[500, 500, 900, 600, 600, 950]]}),
    ("detection", "en", {"target": "pneumothorax", "boxes": []}),
    ("detection", "zh", {"target": "气胸", "boxes": []}),
    ("landmark", "en", {"landmark": "sella", "point": [512.3, 400.7]}),
    ("landmark", "zh", {"landmark": "蝶鞍点", "point": [0, 1000]}),
    ("landmark", "en", {"landmark": "carina", "point": [250.0, 300.0, 480.4]}),
    ("landmark", "zh", {"landmark": "隆突", "point": [250, 300, 480]}),
]
CASE_IDS = [f"{task}-{lang}-{i}" for i, (task, lang, _) in enumerate(CASES)]


@pytest.mark.parametrize(("name", "lang", "fields"), CASES, ids=CASE_IDS)
def test_parse_of_target_is_reference(name: str, lang: str, fields: dict) -> None:
    task = get_task(name)
    reading = task.read(task.target(fields, lang), fields, lang)
    assert reading.strict == reading.lenient == task.reference(fields)


@pytest.mark.parametrize(("name", "lang", "fields"), CASES, ids=CASE_IDS)
def test_prompt_speaks_the_record_language(name: str, lang: str, fields: dict) -> None:
    prompt = get_task(name).prompt(fields, lang)
    assert prompt.strip()
    assert "<|image_pad|>" not in prompt and "<|vision_start|>" not in prompt
    if lang == "zh":
        assert has_cjk(prompt)
    elif not any(has_cjk(str(v)) for v in fields.values()):
        assert not has_cjk(prompt)
    for key in ("question", "target", "landmark"):
        if key in fields:
            assert str(fields[key]) in prompt


@pytest.mark.parametrize(("name", "lang", "fields"), CASES, ids=CASE_IDS)
def test_prompt_is_deterministic(name: str, lang: str, fields: dict) -> None:
    assert get_task(name).prompt(fields, lang) == get_task(name).prompt(dict(fields), lang)


def test_prompts_are_the_same_in_another_process() -> None:
    script = (
        "import json, sys\n"
        "from shared_model.tasks import get_task\n"
        "cases = json.load(sys.stdin)\n"
        "print(json.dumps([get_task(n).prompt(f, l) for n, l, f in cases]))\n"
    )
    here = [get_task(n).prompt(f, lang) for n, lang, f in CASES]
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        run = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(CASES),
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            check=True,
        )
        assert json.loads(run.stdout) == here


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_templates_vary_with_the_question(lang: str) -> None:
    task = get_task("vqa")
    prompts = {
        task.prompt({"question": f"Is lesion {i} malignant?", "answer": "no"}, lang).replace(
            f"Is lesion {i} malignant?", "{q}"
        )
        for i in range(40)
    }
    assert len(prompts) >= 3


@pytest.mark.parametrize(
    ("name", "lang", "fields", "expected"),
    [
        ("vqa", "en", {"question": "Q?", "answer": "no", "options": ["yes", "no"]}, "2:no"),
        ("vqa", "zh", {"question": "问？", "answer": "是", "options": ["是", "否"]}, "1：是"),
        ("vqa", "en", {"question": "Q?", "answer": "Left lung "}, "Left lung"),
        ("vqa", "en", {"question": "Q?", "answer": 2, "options": ["1", "2", "3"]}, "2:2"),
        (
            "classification",
            "en",
            {"question": "Q?", "options": ["normal", "pneumonia"], "label": 1},
            "1:pneumonia",
        ),
        (
            "classification",
            "zh",
            {"question": "问？", "options": ["正常", "肺炎"], "label": 1},
            "1：肺炎",
        ),
        (
            "detection",
            "en",
            {"target": "nodule", "boxes": [[120.4, 80.6, 260.2, 210.5], [30, 40, 10, 20]]},
            "<|object_ref_start|>nodule<|object_ref_end|>"
            "<|box_start|>(120,81),(260,211)<|box_end|><|box_start|>(10,20),(30,40)<|box_end|>",
        ),
        (
            "detection",
            "zh",
            {"target": "肿瘤", "boxes": [[1, 2, 3, 40, 50, 60]]},
            "<|object_ref_start|>肿瘤<|object_ref_end|><|box_start|>[(1,2,3),(40,50,60)]<|box_end|>",
        ),
        (
            "detection",
            "zh",
            {"target": "气胸", "boxes": []},
            "<|object_ref_start|>气胸<|object_ref_end|>无",
        ),
        ("landmark", "en", {"landmark": "sella", "point": [512.3, 400.7]}, "[512,401]"),
        ("landmark", "zh", {"landmark": "隆突", "point": [1, 2, 1000.4]}, "[1,2,1000]"),
        ("report", "en", {"report": "  No acute findings.\n"}, "No acute findings."),
    ],
)
def test_target_text_format(name: str, lang: str, fields: dict, expected: str) -> None:
    assert get_task(name).target(fields, lang) == expected


@pytest.mark.parametrize(
    ("name", "lang", "lines"),
    [
        ("vqa", "en", "1:yes\n2:no"),
        ("vqa", "zh", "1：yes\n2：no"),
        ("classification", "en", "0:yes\n1:no"),
    ],
)
def test_prompt_lists_options_like_the_target(name: str, lang: str, lines: str) -> None:
    fields = {"question": "Q?", "answer": "no", "options": ["yes", "no"], "label": 1}
    assert lines in get_task(name).prompt(fields, lang)


VQA_CLOSED = {"question": "Is there an effusion?", "answer": "No", "options": ["Yes", "No"]}
VQA_ZH = {"question": "是否有积液？", "answer": "否", "options": ["是", "否"]}
CLASSES = {
    "question": "Diagnosis?",
    "options": ["normal", "viral pneumonia", "tuberculosis"],
    "label": 1,
}


@pytest.mark.parametrize(
    ("fields", "text", "expected"),
    [
        (VQA_CLOSED, "2:No", 1),
        (VQA_CLOSED, "  2 :  no  ", 1),
        (VQA_CLOSED, "２：Ｎｏ", 1),
        (VQA_CLOSED, "2", 1),
        (VQA_CLOSED, "(1) yes", 0),
        (VQA_CLOSED, "[2]no", 1),
        (VQA_CLOSED, "Option 1", 0),
        (VQA_CLOSED, "NO", 1),
        (VQA_CLOSED, "no.", 1),
        (VQA_CLOSED, "The answer is yes.", 0),
        (VQA_CLOSED, "7:no", 1),
        (VQA_CLOSED, "maybe", None),
        (VQA_CLOSED, "yes or no", None),
        (VQA_CLOSED, "", None),
        (VQA_ZH, "2：否", 1),
        (VQA_ZH, "否。", 1),
        (VQA_ZH, "答案：1", 0),
        (VQA_ZH, "选项2", 1),
        (VQA_ZH, "（2）否", 1),
        (VQA_ZH, "2、否", 1),
        (VQA_ZH, "不确定", None),
        (CLASSES, "1:viral pneumonia", 1),
        (CLASSES, "2", 2),
        (CLASSES, "Tuberculosis", 2),
        (CLASSES, "It looks like viral pneumonia.", 1),
        (CLASSES, "0 ： normal", 0),
        (CLASSES, "pneumonia", None),
    ],
)
def test_lenient_choice_reading_is_robust(fields: dict, text: str, expected: int | None) -> None:
    name = "classification" if "label" in fields else "vqa"
    assert get_task(name).parse_lenient(text, fields, "en") == expected


def test_open_vqa_parse_normalizes() -> None:
    fields = {"question": "Where?", "answer": "Left lung"}
    task = get_task("vqa")
    assert task.parse("  LEFT   lung. ", fields, "en") == "left lung"
    assert task.parse("左肺。", {"question": "哪里？", "answer": "左肺"}, "zh") == "左肺"
    assert task.parse(" . ", fields, "en") is None


BOX_2D = {"target": "nodule", "boxes": [[120, 81, 260, 211]]}
BOX_3D = {"target": "tumour", "boxes": [[1, 2, 3, 40, 50, 60]]}


@pytest.mark.parametrize(
    ("fields", "text", "expected"),
    [
        (BOX_2D, "<|box_start|>(120,81),(260,211)<|box_end|>", [(120, 81, 260, 211)]),
        (BOX_2D, "(120, 81), (260, 211)", [(120, 81, 260, 211)]),
        (BOX_2D, "nodule: （120，81），（260，211）", [(120, 81, 260, 211)]),
        (BOX_2D, "［120，81，260，211］", [(120, 81, 260, 211)]),
        (BOX_2D, "<|box_start|>(260,211),(120,81)<|box_end|>", [(120, 81, 260, 211)]),
        (BOX_2D, "<|box_start|>(260,81),(120,211)<|box_end|>", [(120, 81, 260, 211)]),
        (BOX_2D, "<|box_start|>(-5,20),(1200,30.4)<|box_end|>", [(0, 20, 1000, 30)]),
        (BOX_2D, "<|box_start|>120,81,260,211<|box_end|>", [(120, 81, 260, 211)]),
        (
            BOX_2D,
            "<|object_ref_start|>2 nodules<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|>"
            "<|box_start|>(5,6),(7,8)<|box_end|>",
            [(1, 2, 3, 4), (5, 6, 7, 8)],
        ),
        (BOX_2D, "<|box_start|>(1,2),(3,4)<|box_end|><|box_start|>(5,6),(7", [(1, 2, 3, 4)]),
        (BOX_2D, "<|box_start|>(120,81),(260<|box_end|>", None),
        (BOX_2D, "<|box_start|>(a,b),(c,d)<|box_end|>", None),
        (BOX_2D, "I cannot find it.", None),
        (BOX_2D, "<|object_ref_start|>nodule<|object_ref_end|>none", []),
        (BOX_2D, "无", []),
        (BOX_3D, "<|box_start|>[(1,2,3),(40,50,60)]<|box_end|>", [(1, 2, 3, 40, 50, 60)]),
        (BOX_3D, "[(40, 50, 60), (1, 2, 3)]", [(1, 2, 3, 40, 50, 60)]),
        (BOX_3D, "<|box_start|>(1,2),(40,50)<|box_end|>", None),
    ],
)
def test_lenient_box_reading_is_robust(fields: dict, text: str, expected: list | None) -> None:
    parsed = get_task("detection").parse_lenient(text, fields, "en")
    assert parsed == expected
    if parsed:
        assert all(isinstance(v, float) for box in parsed for v in box)


POINT_2D = {"landmark": "sella", "point": [512, 401]}
POINT_3D = {"landmark": "carina", "point": [250, 300, 480]}


@pytest.mark.parametrize(
    ("fields", "text", "expected"),
    [
        (POINT_2D, "[512,401]", (512, 401)),
        (POINT_2D, " [ 512 , 401 ] ", (512, 401)),
        (POINT_2D, "［512，401］", (512, 401)),
        (POINT_2D, "(511.6, 400.6)", (512, 401)),
        (POINT_2D, "x=1200, y=-3", (1000, 0)),
        (POINT_2D, "sella at [1,2,3] or [5,6]", (5, 6)),
        (POINT_2D, "[512,", None),
        (POINT_2D, "somewhere in the middle", None),
        (POINT_3D, "[250,300,480]", (250, 300, 480)),
        (POINT_3D, "[250,300]", None),
    ],
)
def test_lenient_point_reading_is_robust(fields: dict, text: str, expected: tuple | None) -> None:
    assert get_task("landmark").parse_lenient(text, fields, "zh") == expected


JUNK = [
    "",
    "   ",
    "((((",
    "<|box_start|>",
    "<|box_end|>)]",
    "9" * 5000,
    "：：：",
    "\x00\uffff",
    "[]",
]


@pytest.mark.parametrize("name", TASK_NAMES)
@pytest.mark.parametrize("junk", JUNK, ids=range(len(JUNK)))
def test_parse_never_raises(name: str, junk: str) -> None:
    fields = next(f for n, _, f in CASES if n == name)
    task = get_task(name)
    expected_type = type(task.reference(fields))
    for parse in (task.parse, task.parse_lenient):
        parsed = parse(junk, fields, "en")
        assert parsed is None or isinstance(parsed, expected_type)
        assert parse(None, fields, "en") is None  # type: ignore[arg-type]
        bare = parse(junk, {}, "zh")
        assert bare is None or isinstance(bare, (str, int, list, tuple))


def test_registry_matches_the_design() -> None:
    assert Policy().tasks == TASK_NAMES and len(TASK_NAMES) == 7
    assert tuple(STAGE_TASKS) == STAGES
    assert ALIGN_TASKS == ("caption", "compare")
    assert INSTRUCT_TASKS == ("vqa", "classification", "report", "detection", "landmark")
    for name in TASK_NAMES:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name and name in STAGE_TASKS[task.stage]


def test_unknown_task_lists_known_names() -> None:
    with pytest.raises(KeyError, match="known tasks are caption, compare, vqa"):
        get_task("segmentation")
    with pytest.raises(ValueError, match="'segmentation'"):
        get_task("segmentation")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_unknown_language_is_refused(name: str) -> None:
    fields = next(f for n, _, f in CASES if n == name)
    with pytest.raises(ValueError, match="language 'fr'"):
        get_task(name).prompt(fields, "fr")
    with pytest.raises(ValueError, match="language 'fr'"):
        get_task(name).target(fields, "fr")


def test_answer_outside_options_is_refused() -> None:
    fields = {"question": "Q?", "answer": "maybe", "options": ["yes", "no"]}
    with pytest.raises(ValueError, match="'maybe' is not one of the options"):
        get_task("vqa").target(fields, "en")
