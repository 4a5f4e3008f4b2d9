"""A small bilingual corpus for the tiny base: tokenizer training text and pretraining captions.

The tiny base must behave like a pretrained model (it can already speak English and Chinese,
write numbers and boxes), without ever seeing the evaluation tasks' answers. Everything here is
generic: shapes, colours, positions, counts and everyday medical vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

SHAPES = {"circle": "圆形", "square": "方块", "ring": "圆环", "bar": "长条"}
BRIGHTNESS = {"bright": "明亮的", "dark": "暗的", "grey": "灰色的"}
SIZES = {"small": "小", "medium": "中等大小的", "large": "大"}
SIDES = {"left": "左侧", "right": "右侧", "top": "上方", "bottom": "下方", "centre": "中央"}
COUNTS = {1: "一", 2: "两", 3: "三"}

MEDICAL_TERMS = {
    "image": "图像",
    "scan": "扫描",
    "chest": "胸部",
    "lung": "肺",
    "heart": "心脏",
    "liver": "肝脏",
    "kidney": "肾脏",
    "brain": "脑",
    "bone": "骨",
    "abdomen": "腹部",
    "lesion": "病灶",
    "nodule": "结节",
    "mass": "肿块",
    "cyst": "囊肿",
    "calcification": "钙化",
    "fracture": "骨折",
    "effusion": "积液",
    "pneumonia": "肺炎",
    "normal": "正常",
    "abnormal": "异常",
    "x-ray": "X光",
    "ct": "CT",
    "mri": "磁共振",
    "ultrasound": "超声",
    "patient": "患者",
    "finding": "所见",
    "impression": "印象",
    "diagnosis": "诊断",
    "modality": "模态",
    "organ": "器官",
    "landmark": "标志点",
    "location": "位置",
    "region": "区域",
    "volume": "体积",
    "slice": "切片",
    "size": "大小",
    "side": "侧",
    "yes": "是",
    "no": "否",
}

EN_SENTENCES = (
    "What is shown in this {term}?",
    "Describe the {term}.",
    "Is there a {term} in the image?",
    "Please answer the question about the {term}.",
    "The {term} appears {adj}.",
    "Which option is correct? Answer with the number.",
    "Please output the bounding box of the object.",
    "Please give the coordinates of the point.",
    "Compare the two images and describe the difference.",
    "Write a short report for this {term}.",
)
ZH_SENTENCES = (
    "这张{term}显示了什么？",
    "请描述这张{term}。",
    "图像中有{term}吗？",
    "请回答关于{term}的问题。",
    "该{term}看起来{adj}。",
    "哪个选项是正确的？请用编号回答。",
    "请输出目标的边界框。",
    "请给出该点的坐标。",
    "请比较两张图像并描述差异。",
    "请为这张{term}写一份简短的报告。",
)


def corpus_lines(seed: int = 0, n_lines: int = 6000) -> Iterator[str]:
    """Yield deterministic bilingual lines covering words, digits, punctuation and box syntax."""
    rng = random.Random(seed)
    terms = list(MEDICAL_TERMS.items())
    adjectives = list(BRIGHTNESS.items()) + list(SIZES.items())
    for english, chinese in terms:
        yield f"{english} {english.capitalize()} {english.upper()} {chinese}"
    for number in range(1001):
        yield f"{number} ({number},{1000 - number}) [{number},{number // 2}]"
    for index in range(n_lines):
        term_en, term_zh = rng.choice(terms)
        adj_en, adj_zh = rng.choice(adjectives)
        if index % 2:
            yield rng.choice(EN_SENTENCES).format(term=term_en, adj=adj_en)
        else:
            yield rng.choice(ZH_SENTENCES).format(term=term_zh, adj=adj_zh)
        caption = random_caption(rng)
        yield caption.english
        yield caption.chinese


class Caption:
    """A generic scene of shapes, its description in both languages, and the drawing recipe."""

    def __init__(self, shapes: list[tuple[str, str, str, str]]) -> None:
        self.shapes = shapes  # (shape, brightness, size, side)

    @property
    def english(self) -> str:
        """The scene in English."""
        parts = [
            f"a {size} {bright} {shape} at the {side}" for shape, bright, size, side in self.shapes
        ]
        return "There is " + ", and ".join(parts) + "."

    @property
    def chinese(self) -> str:
        """The scene in Chinese."""
        parts = [
            f"{SIDES[side]}有一个{SIZES[size]}{BRIGHTNESS[bright]}{SHAPES[shape]}"
            for shape, bright, size, side in self.shapes
        ]
        return "，".join(parts) + "。"


def random_caption(rng: random.Random) -> Caption:
    """One to three shapes with random look and place."""
    count = rng.choice(list(COUNTS))
    sides = rng.sample(list(SIDES), count)
    return Caption(
        [
            (rng.choice(list(SHAPES)), rng.choice(list(BRIGHTNESS)), rng.choice(list(SIZES)), side)
            for side in sides
        ]
    )
