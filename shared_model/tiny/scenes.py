"""Generic synthetic scenes for pretraining the tiny base: shapes with known look and place.

Nothing here is a medical task: the scenes teach the random-init base to see, to speak both
languages, and to write option numbers, points and boxes, as a real pretrained Qwen2-VL can.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from shared_model.tiny.corpus import BRIGHTNESS, SHAPES, SIDES, Caption, random_caption

LEVELS = {"bright": 235, "grey": 150, "dark": 40}
RADII = {"small": 0.08, "medium": 0.14, "large": 0.2}
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
            mask = (abs(xx - cx) < radius) & (abs(yy - cy) < radius * 0.35)
        image[mask] = LEVELS[bright]
    rgb = np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    if slices is None:
        return rgb
    return np.stack([rgb] * slices)


def box_text(side: str, size: str) -> str:
    """The shape's box on the 0-1000 grid in Qwen2-VL syntax."""
    cx, cy = CENTRES[side]
    r = RADII[size]
    x1, y1, x2, y2 = (round(1000 * v) for v in (cx - r, cy - r, cx + r, cy + r))
    return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


def conversation(rng: random.Random, canvas: int, slices: int | None) -> Conversation:
    """A random scene and one of several generic questions about it, in English or Chinese."""
    caption = random_caption(rng)
    image = draw(caption, canvas, slices, rng)
    shape, _, size, side = caption.shapes[0]
    zh = rng.random() < 0.5
    colon = "：" if zh else ":"
    kind = rng.choice(("describe", "box", "point", "choice", "yesno"))
    if kind == "describe":
        return Conversation(
            image,
            "请描述这张图像。" if zh else "Describe the image.",
            caption.chinese if zh else caption.english,
        )
    name = SHAPES[shape] if zh else shape
    if kind == "box":
        question = f"请框出{name}。" if zh else f"Output the bounding box of the {name}."
        return Conversation(image, question, box_text(side, size))
    if kind == "point":
        cx, cy = CENTRES[side]
        question = f"请给出{name}中心的坐标。" if zh else f"Give the centre point of the {name}."
        return Conversation(image, question, f"[{round(1000 * cx)},{round(1000 * cy)}]")
    if kind == "choice":
        names = [SHAPES[s] if zh else s for s in SHAPES]
        listing = " ".join(f"{i}{colon}{n}" for i, n in enumerate(names))
        question = f"图中有哪种形状？{listing}" if zh else f"Which shape is shown? {listing}"
        index = list(SHAPES).index(shape)
        return Conversation(image, question, f"{index}{colon}{names[index]}")
    asked = rng.choice(list(BRIGHTNESS))
    present = any(b == asked for _, b, _, _ in caption.shapes)
    yes, no = ("是", "否") if zh else ("yes", "no")
    adjective = BRIGHTNESS[asked] if zh else asked
    question = (
        f"图中有{adjective}形状吗？1{colon}{yes} 2{colon}{no}"
        if zh
        else f"Is there a {adjective} shape? 1{colon}{yes} 2{colon}{no}"
    )
    return Conversation(image, question, f"1{colon}{yes}" if present else f"2{colon}{no}")


__all__ = ["SIDES", "Conversation", "conversation", "draw"]
