"""Generic synthetic scenes for pretraining the tiny base: shapes with known look and place.

Nothing here is a medical task: the scenes teach the random-init base to see, to speak both
languages, and to write option numbers, points and boxes, as a real pretrained Qwen2-VL can.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from shared_model.tiny.corpus import (
    BRIGHTNESS,
    COUNTS,
    SHAPES,
    SIDES,
    SIZES,
    WORDS_EN,
    WORDS_ZH,
    Caption,
    random_caption,
)
from shared_model.tiny.phrasings import (
    BOX,
    BOX_WORDS,
    DESCRIBE,
    POINT,
    lang_of,
    listed_question,
    object_name,
    request,
)

LEVELS = {"bright": 235, "grey": 150, "dark": 40}
RADII = {"small": 0.08, "medium": 0.14, "large": 0.2}
BAR_HEIGHT = 0.35
"""A bar's half height, as a fraction of its half width."""
CENTRES = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.22),
    "bottom": (0.5, 0.78),
    "centre": (0.5, 0.5),
}


@dataclass(frozen=True)
class Conversation:
    """One pretraining example: pixels, a user instruction and the answer."""

    image: np.ndarray
    question: str
    answer: str


def draw(caption: Caption, canvas: int, slices: int | None, rng: random.Random) -> np.ndarray:
    """Render a caption's shapes on a mid-grey background (a volume repeats them across slices)."""
    yy, xx = np.mgrid[0:canvas, 0:canvas] / canvas
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 8.0, (canvas, canvas))
    image = 100.0 + noise
    for shape, bright, size, side in caption.shapes:
        cx, cy = CENTRES[side]
        radius = RADII[size]
        distance = np.hypot(xx - cx, yy - cy)
        if shape == "circle":
            mask = distance < radius
        elif shape == "square":
            mask = (abs(xx - cx) < radius) & (abs(yy - cy) < radius)
        elif shape == "ring":
            mask = (distance < radius) & (distance > radius * 0.55)
        else:
            mask = (abs(xx - cx) < radius) & (abs(yy - cy) < radius * BAR_HEIGHT)
        image[mask] = LEVELS[bright]
    rgb = np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    if slices is None:
        return rgb
    return np.stack([rgb] * slices)


def box_text(shape: str, side: str, size: str, name: str, volume: bool = False) -> str:
    """The shape's box on the 0-1000 grid in Qwen2-VL's grounding syntax (the object named,
    then its box); a volume's box spans every slice, ``[(x1,y1,z1),(x2,y2,z2)]``."""
    cx, cy = CENTRES[side]
    r = RADII[size]
    half_height = r * BAR_HEIGHT if shape == "bar" else r
    x1, y1, x2, y2 = (round(1000 * v) for v in (cx - r, cy - half_height, cx + r, cy + half_height))
    corners = f"[({x1},{y1},0),({x2},{y2},1000)]" if volume else f"({x1},{y1}),({x2},{y2})"
    return f"<|object_ref_start|>{name}<|object_ref_end|><|box_start|>{corners}<|box_end|>"


KINDS = (
    "describe", "box", "box", "point", "choice", "choice", "yesno", "find", "lookup",
    "open", "open", "open",
)  # fmt: skip
"""Question kinds, as often as each is asked. ``open`` questions (a word, no listed options)
carry most of the signal that makes the language model read its image tokens."""


def conversation(
    rng: random.Random, canvas: int, slices: int | None, most_shapes: int = 3
) -> Conversation:
    """A random scene of up to ``most_shapes`` shapes and one of several generic questions
    about it, in English or Chinese."""
    caption = random_caption(rng, most_shapes)
    image = draw(caption, canvas, slices, rng)
    shape, _, size, side = caption.shapes[0]
    zh = rng.random() < 0.5
    kind = rng.choice(KINDS)
    if kind == "open":
        return _with_image(_open(rng, caption, zh), image)
    if kind in ("find", "lookup"):
        return _with_image((_find if kind == "find" else _lookup)(rng, zh), image)
    if kind == "describe":
        answer = caption.chinese if zh else caption.english
        return Conversation(image, request(rng, DESCRIBE, zh), answer)
    name = SHAPES[shape] if zh else shape
    if len(caption.shapes) == 1:
        name = object_name(rng, name, zh)
    if kind == "box":
        volume = slices is not None
        question = request(rng, BOX, zh, x=name, box=BOX_WORDS[lang_of(zh)][volume])
        return Conversation(image, question, box_text(shape, side, size, name, volume))
    if kind == "point":
        cx, cy = CENTRES[side]
        depth = ",500" if slices is not None else ""
        answer = f"[{round(1000 * cx)},{round(1000 * cy)}{depth}]"
        return Conversation(image, request(rng, POINT, zh, x=name), answer)
    if kind == "choice":
        return _with_image(_choice(rng, caption, zh), image)
    asked = rng.choice(list(BRIGHTNESS))
    present = any(b == asked for _, b, _, _ in caption.shapes)
    yes, no = ("是", "否") if zh else ("yes", "no")
    adjective = BRIGHTNESS[asked] if zh else asked
    question = f"图中有{adjective}形状吗？" if zh else f"Is there a {adjective} shape?"
    return _with_image(_listed(rng, question, [yes, no], 0 if present else 1, zh, base=1), image)


def _with_image(chat: Conversation, image: np.ndarray) -> Conversation:
    return Conversation(image, chat.question, chat.answer)


_PENDING = np.zeros((1, 1, 3), dtype=np.uint8)  # replaced by :func:`_with_image`


def where(rng: random.Random, canvas: int) -> Conversation:
    """One clearly visible shape and where it is, answered with a word: the vision warm-up.

    A random-init base first learns to answer from the text alone (answer formats, the
    language); the image tokens only start to matter once a question can be answered from
    nothing else. Measured on this base (own image against another scene's image, answer
    loss): a few hundred steps of these questions alone make it read the image (0.01 against
    1.4), while the full mix of kinds from a random start does not within 3000 steps.
    """
    side = rng.choice(list(SIDES))
    look = (
        rng.choice(list(SHAPES)),
        rng.choice(("bright", "dark")),
        rng.choice(("medium", "large")),
    )
    image = draw(Caption([(*look, side)]), canvas, None, rng)
    if rng.random() < 0.5:
        return Conversation(image, "形状在哪里？", SIDES[side])
    return Conversation(image, "Where is the shape?", side)


def _facet(rng: random.Random, caption: Caption, zh: bool) -> tuple[str, dict, object]:
    """A question about the first shape's kind, look, size or side, or the number of shapes:
    the question, its answer words and the right key."""
    shape, bright, size, side = caption.shapes[0]
    name = SHAPES[shape] if zh else shape
    facets = {
        "shape": ("图中有哪种形状？", "Which shape is shown?", SHAPES, shape),
        "bright": (f"{name}的亮度如何？", f"How bright is the {name}?", BRIGHTNESS, bright),
        "size": (f"{name}有多大？", f"How large is the {name}?", SIZES, size),
        "side": (f"{name}在哪里？", f"Where is the {name}?", SIDES, side),
        "count": ("图中有几个形状？", "How many shapes are there?", COUNTS, len(caption.shapes)),
    }
    question_zh, question_en, words, right = facets[rng.choice(list(facets))]
    return (question_zh if zh else question_en), words, right


def _open(rng: random.Random, caption: Caption, zh: bool) -> Conversation:
    """A facet of the scene answered with its word alone."""
    question, words, right = _facet(rng, caption, zh)
    return Conversation(_PENDING, question, str(words[right]) if zh else str(right))


def _choice(rng: random.Random, caption: Caption, zh: bool) -> Conversation:
    """Pick the right one of a few listed words for a facet of the scene."""
    question, words, right = _facet(rng, caption, zh)
    keys = list(words)
    rng.shuffle(keys)
    keys = [right, *[k for k in keys if k != right][: rng.randint(1, 3)]]
    rng.shuffle(keys)
    names = [str(words[k]) if zh else str(k) for k in keys]
    return _listed(rng, question, names, keys.index(right), zh, rng.choice((0, 1)))


def _find(rng: random.Random, zh: bool) -> Conversation:
    """Name the listed option that holds a given word: teaches the language model to write
    ``n:option`` and to copy an option's words, for the whole vocabulary a real base knows (a
    word never written in pretraining stays unlikely however much LoRA adapts)."""
    pool = WORDS_ZH if zh else WORDS_EN
    names = rng.sample(pool, rng.randint(2, 5))
    right = rng.randrange(len(names))
    question = f"哪个选项是“{names[right]}”？" if zh else f"Which option says {names[right]}?"
    return _listed(rng, question, names, right, zh, rng.choice((0, 1)))


def _lookup(rng: random.Random, zh: bool) -> Conversation:
    """Write out the listed option of a given number: its text must be copied from the list
    (the part of ``n:option`` no question gives away)."""
    pool = WORDS_ZH if zh else WORDS_EN
    names = rng.sample(pool, rng.randint(2, 5))
    right, base = rng.randrange(len(names)), rng.choice((0, 1))
    question = f"第{right + base}项是什么？" if zh else f"What is option {right + base}?"
    return _listed(rng, question, names, right, zh, base)


def _listed(
    rng: random.Random, question: str, names: list[str], right: int, zh: bool, base: int
) -> Conversation:
    """A question with numbered options one a line, answered ``n:option`` (``n：option``)."""
    colon = "：" if zh else ":"
    listing = "\n".join(f"{i + base}{colon}{n}" for i, n in enumerate(names))
    text = listed_question(rng, question, listing, zh)
    return Conversation(_PENDING, text, f"{right + base}{colon}{names[right]}")


__all__ = ["SIDES", "Conversation", "conversation", "draw", "where"]
