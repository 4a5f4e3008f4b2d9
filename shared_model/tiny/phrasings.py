"""Many ways to ask the same thing: the instruction phrasings of the tiny base's pretraining.

A real instruction-tuned base (Qwen2-VL-2B-Instruct) answers a question it has never seen in
the format the question asks for, because it was tuned on many phrasings of each kind of
request. A base this small learns only the phrasings it is shown: pretrained with one sentence
per kind, it answered the hospitals' differently worded requests in the wrong format (a box for
a point, a shape word for a class), and DP-SGD then had to teach the formats under noise before
it could teach anything else. So each kind of request here comes in several wordings, leads,
headers and closing sentences, with the asked object named by a generic word as often as by its
shape, and option lists numbered from 0 or 1. Everything stays generic: shapes, their looks and
places; no hospital task's answer is in here.
"""

from __future__ import annotations

import random

OBJECT_WORDS = {
    "en": ("object", "target", "shape", "spot", "item", "mark", "region", "thing"),
    "zh": ("目标", "物体", "形状", "斑点", "标记", "区域", "东西"),
}
"""Generic names of the one object in a scene; the answer names it as the question did."""

PICTURE_WORDS = {"en": ("image", "picture", "scan"), "zh": ("图像", "图片", "影像")}

BOX = {
    "en": (
        "Output the bounding box of the {x}.",
        "Detect the {x} and output its {box}.",
        "Where is the {x} in this {img}? Give its {box}.",
        "Find the {x} in the {img} and give the coordinates of its {box}.",
        "Please locate the {x} and output its {box}.",
        "Draw a {box} around the {x}.",
    ),
    "zh": (
        "请框出{x}。",
        "请检测{x}并输出{box}。",
        "{img}中的{x}在哪里？请给出它的{box}。",
        "请在{img}中找到{x}，并给出其{box}的坐标。",
        "请定位{x}，输出{box}。",
        "请用{box}标出{x}。",
    ),
}
BOX_WORDS = {
    "en": {False: "bounding box", True: "3D bounding box"},
    "zh": {False: "边界框", True: "三维边界框"},
}

POINT = {
    "en": (
        "Give the centre point of the {x}.",
        "Where is the {x}? Output the coordinates of its centre.",
        "Locate the {x} and output its coordinates.",
        "Find the {x} in this {img} and give its position.",
        "Output the position of the {x} as a point.",
        "Point to the {x} in the {img}.",
    ),
    "zh": (
        "请给出{x}中心的坐标。",
        "{x}在哪里？请输出其中心点的坐标。",
        "请定位{x}并输出其坐标。",
        "请在{img}中找到{x}，并给出其位置。",
        "请以点的形式输出{x}的位置。",
        "请指出{img}中的{x}。",
    ),
}

DESCRIBE = {
    "en": (
        "Describe the image.",
        "Describe this {img} briefly.",
        "What is in this {img}? Describe it.",
        "Write a short description of the {img}.",
        "What do you see? Answer in one sentence.",
    ),
    "zh": (
        "请描述这张图像。",
        "请简要描述这张{img}。",
        "这张{img}里有什么？请描述。",
        "请为这张{img}写一段简短的描述。",
        "你看到了什么？请用一句话回答。",
    ),
}

OPTION_LEADS = {
    "en": ("", "", "Look at the image.", "Classify this image.", "Identify what is shown."),
    "zh": ("", "", "请观察这张图像。", "请对这张图像进行分类。", "请识别图中的内容。"),
}
OPTION_HEADERS = {
    "en": (
        "",
        "Options:",
        "Categories:",
        "Choose the correct option from the following:",
        "Choose the correct class from the following:",
        "Select one of the following:",
    ),
    "zh": (
        "",
        "选项：",
        "类别：",
        "请从以下选项中选择正确的一项：",
        "请从以下类别中选择正确的一项：",
        "请选择其中一项：",
    ),
}
OPTION_TAILS = {
    "en": (
        "",
        "",
        "Answer with the option's number and text.",
        "Answer with the category number and name.",
        "Reply with the number and the name.",
    ),
    "zh": ("", "", "请回答选项的编号和内容。", "请回答类别的编号和名称。", "请用编号和名称回答。"),
}


def lang_of(zh: bool) -> str:
    """``"zh"`` or ``"en"``."""
    return "zh" if zh else "en"


def object_name(rng: random.Random, shape_name: str, zh: bool) -> str:
    """What the question calls the scene's object: its shape, or a generic word."""
    return shape_name if rng.random() < 0.4 else rng.choice(OBJECT_WORDS[lang_of(zh)])


def request(
    rng: random.Random, templates: dict[str, tuple[str, ...]], zh: bool, **words: str
) -> str:
    """One of ``templates``' wordings (:data:`BOX`, :data:`POINT`, :data:`DESCRIBE`) in the
    language, filled with ``words`` and a picture word."""
    lang = lang_of(zh)
    return rng.choice(templates[lang]).format(img=rng.choice(PICTURE_WORDS[lang]), **words)


def listed_question(rng: random.Random, question: str, listing: str, zh: bool) -> str:
    """A question and its numbered options, with a random lead, header and closing line."""
    lang = lang_of(zh)
    lead = rng.choice(OPTION_LEADS[lang])
    head = f"{lead} {question}" if lead and not zh else f"{lead}{question}"
    parts = [head, rng.choice(OPTION_HEADERS[lang]), listing, rng.choice(OPTION_TAILS[lang])]
    return "\n".join(part for part in parts if part)
