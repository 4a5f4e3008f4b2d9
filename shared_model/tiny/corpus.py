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


# Everyday instruction language of an assistant that answers about images, in both languages:
# a real Qwen2 tokenizer has these as whole words. Without them the tiny tokenizer spells a
# prompt byte by byte (``Choose`` in five tokens, a Chinese character in three), and every
# training step pays for the length. No answer of any evaluation task is in here.
INSTRUCTION_WORDS_EN = (
    "please answer the question about this image choose select pick the correct option class "
    "category categories classify classification options following from one of with number "
    "name text write give output provide generate describe description short brief caption "
    "report findings impression radiology medical diagnostic examination scan volume 3D "
    "bounding box coordinates coordinate point position locate detect find where which what "
    "does show shows shown content changed change differences difference similarities differ "
    "between first second both look explain how based on form up them its their these those "
    "this that is are was were there here any of and or in at to for a an the it as"
)
INSTRUCTION_WORDS_ZH = (
    "请 回答 问题 关于 这张 图像 影像 选择 正确 选项 类别 分类 编号 名称 以下 一项 其中 根据 "
    "描述 说明 简要 内容 显示 报告 撰写 生成 诊断 放射学 检查 所见 印象 医学 三维 边界框 坐标 "
    "位置 定位 检测 输出 给出 找到 哪里 哪个 哪些 什么 比较 变化 差异 相同点 不同点 观察 两张 "
    "第一张 第二张 相比 以及 并且 并 和 的 中 在 有 是 否 该 其 一份 一段 形式 写成 发现 这次 "
    "为 对 进行 从 中的 点 标志点 扫描 图中 有何 不同 它们 请用 模态 方式 成像"
)
# Words and short phrases a base writes as answers: the generic medical vocabulary and the
# words of the scenes, in both languages (the tiny base's stand-in for a real base's breadth).
WORDS_EN = sorted(
    {*MEDICAL_TERMS, *SHAPES, *BRIGHTNESS, *SIZES, *SIDES}
    | {f"{a} {b}" for a in ("small", "large", "left") for b in ("lesion", "mass", "nodule")}
    | {"adrenal", "gland", "adrenal mass", "normal gland", "opacity", "consolidation", "tumor"}
)
WORDS_ZH = sorted(
    {*MEDICAL_TERMS.values(), *SHAPES.values(), *BRIGHTNESS.values(), *SIZES.values()}
    | {*SIDES.values(), "左侧肺", "右侧肺", "肾上腺", "肾上腺肿块", "正常腺体", "阴影", "实变"}
)

INSTRUCTION_SENTENCES = (
    ("Please answer the question about this image.", "请回答关于这张图像的问题。"),
    ("Choose the correct option from the following:", "请从以下选项中选择正确的一项："),
    ("Answer with the option's number and text.", "请回答选项的编号和内容。"),
    ("Answer with the category number and name.", "请回答类别的编号和名称。"),
    ("Classify this image.", "请对这张图像进行分类。"),
    ("Describe this image briefly.", "请简要描述这张图像。"),
    ("Output the bounding box of the object.", "请输出目标的边界框。"),
    ("Give the coordinates of the point.", "请给出该点的坐标。"),
    ("Where is it in this scan?", "它在这次扫描中的哪里？"),
    ("Write a short report.", "请写一份简短的报告。"),
)


def corpus_lines(seed: int = 0, n_lines: int = 6000) -> Iterator[str]:
    """Yield deterministic bilingual lines covering words, digits, punctuation and box syntax."""
    rng = random.Random(seed)
    terms = list(MEDICAL_TERMS.items())
    adjectives = list(BRIGHTNESS.items()) + list(SIZES.items())
    for english, chinese in terms:
        yield f"{english} {english.capitalize()} {english.upper()} {chinese}"
    for _ in range(20):
        yield INSTRUCTION_WORDS_EN
        yield INSTRUCTION_WORDS_EN.capitalize()
        yield INSTRUCTION_WORDS_ZH.replace(" ", "")
        yield INSTRUCTION_WORDS_ZH
        for english, chinese in INSTRUCTION_SENTENCES:
            yield english
            yield chinese
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


def random_caption(rng: random.Random, most: int = 3) -> Caption:
    """One to ``most`` (at most three) shapes with random look and place."""
    count = rng.choice(list(COUNTS)[:most])
    sides = rng.sample(list(SIDES), count)
    return Caption(
        [
            (rng.choice(list(SHAPES)), rng.choice(list(BRIGHTNESS)), rng.choice(list(SIZES)), side)
            for side in sides
        ]
    )
