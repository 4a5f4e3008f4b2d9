"""Boxes and points on Qwen2-VL's 0-1000 grid: quantising, writing and reading them back.

Written forms (integers on the grid):

- 2D box ``(x1,y1),(x2,y2)``; 3D box ``[(x1,y1,z1),(x2,y2,z2)]``; detection wraps each box in
  ``<|box_start|>``/``<|box_end|>``.
- 2D point ``[x,y]``; 3D point ``[x,y,z]``.

Strict reading takes exactly these forms: integers from 0 to 1000 without sign or leading
zero, the right number of coordinates, ASCII brackets and commas (white space between them
aside), every box in its own ``<|box_start|>``/``<|box_end|>`` group, and the first corner the
top-left (front) one. Swapped corners are malformed: Qwen2-VL's grounding format defines the
order, and ``(260,81),(120,211)`` could be a mistake in either corner.

Lenient reading also accepts full-width brackets and commas, decimals, swapped corners,
``[x1,y1,x2,y2]`` lists, coordinates outside the grid (clamped) and missing special tokens.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

from shared_model.sample import GRID

BOX_START, BOX_END = "<|box_start|>", "<|box_end|>"
REF_START, REF_END = "<|object_ref_start|>", "<|object_ref_end|>"

Box = tuple[float, ...]
Point = tuple[float, ...]

_GROUP = re.compile(r"[(\[]([^()\[\]]*)[)\]]")
_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?")
_OBJECT_REF = re.compile(re.escape(REF_START) + r".*?" + re.escape(REF_END), re.DOTALL)
_SPECIAL = re.compile("|".join(re.escape(t) for t in (BOX_START, BOX_END, REF_START, REF_END)))
_INT = r"\s*(0|[1-9][0-9]*)\s*"
_STRICT_POINT = {dim: re.compile(r"\[" + ",".join([_INT] * dim) + r"\]") for dim in (2, 3)}
_CORNER = {dim: r"\s*\(" + ",".join([_INT] * dim) + r"\)\s*" for dim in (2, 3)}
_STRICT_BOX = {
    2: re.compile(f"{_CORNER[2]},{_CORNER[2]}"),
    3: re.compile(rf"\s*\[{_CORNER[3]},{_CORNER[3]}\]\s*"),
}
_BOX_GROUP = re.compile(re.escape(BOX_START) + r"((?:(?!<\|).)*)" + re.escape(BOX_END), re.DOTALL)


def quantize(value: float) -> float:
    """Round half up to an integer grid position and clamp it to ``[0, 1000]``."""
    return float(math.floor(min(GRID, max(0.0, float(value))) + 0.5))


def to_grid_point(point: Sequence[float]) -> Point:
    """Quantised ``(x, y)`` or ``(x, y, z)``; ``ValueError`` for another length."""
    if len(point) not in (2, 3):
        raise ValueError(f"a point has 2 or 3 coordinates, got {list(point)}")
    return tuple(quantize(v) for v in point)


def to_grid_box(box: Sequence[float]) -> Box:
    """Quantised box with ``min <= max`` on every axis; ``ValueError`` for a bad length."""
    if len(box) not in (4, 6):
        raise ValueError(f"a box has 4 (2D) or 6 (3D) coordinates, got {list(box)}")
    dim = len(box) // 2
    values = [quantize(v) for v in box]
    low = [min(values[i], values[i + dim]) for i in range(dim)]
    high = [max(values[i], values[i + dim]) for i in range(dim)]
    return tuple(low + high)


def _integers(values: Sequence[float]) -> str:
    return ",".join(str(int(quantize(v))) for v in values)


def format_point(point: Sequence[float]) -> str:
    """``[x,y]`` or ``[x,y,z]`` in grid integers."""
    return f"[{_integers(to_grid_point(point))}]"


def format_box(box: Sequence[float]) -> str:
    """``(x1,y1),(x2,y2)`` for 2D, ``[(x1,y1,z1),(x2,y2,z2)]`` for 3D, in grid integers."""
    grid_box = to_grid_box(box)
    dim = len(grid_box) // 2
    corners = f"({_integers(grid_box[:dim])}),({_integers(grid_box[dim:])})"
    return corners if dim == 2 else f"[{corners}]"


def strip_markup(text: str) -> str:
    """NFKC text without ``<|object_ref_start|>...<|object_ref_end|>`` spans or box tokens."""
    text = _OBJECT_REF.sub(" ", unicodedata.normalize("NFKC", text))
    return _SPECIAL.sub(" ", text)


def read_boxes(text: str, dim: int | None) -> list[Box]:
    """Every readable box in generated text, quantised and normalised.

    Parameters
    ----------
    text:
        Generated text. With ``<|box_start|>`` tokens each token opens one box group; without
        them the whole text is one group.
    dim:
        2 or 3 to keep only boxes of that dimension; ``None`` keeps the dimension of the first
        box read.

    Returns
    -------
    list of tuple
        Boxes in the order written; groups that hold no complete box are skipped.
    """
    text = _OBJECT_REF.sub(" ", unicodedata.normalize("NFKC", text))
    if BOX_START in text:
        chunks = [chunk.split(BOX_END)[0] for chunk in text.split(BOX_START)[1:]]
    else:
        chunks = [text]
    boxes = [box for chunk in chunks for box in _chunk_boxes(_SPECIAL.sub(" ", chunk))]
    if dim is None and boxes:
        dim = len(boxes[0]) // 2
    return [to_grid_box(box) for box in boxes if len(box) == 2 * (dim or 0)]


def read_point(text: str, dim: int | None) -> Point | None:
    """The first readable point (``dim`` coordinates, or 2 or 3 when ``None``) in the text."""
    sizes = (2, 3) if dim is None else (dim,)
    text = strip_markup(text)
    for group in _number_groups(text):
        if len(group) in sizes:
            return to_grid_point(group)
    values = _numbers(text)
    return to_grid_point(values) if len(values) in sizes else None


def _numbers(text: str) -> list[float]:
    return [float(match) for match in _NUMBER.findall(text)]


def _number_groups(text: str) -> list[tuple[float, ...]]:
    """Numbers of every innermost ``(...)`` or ``[...]`` group, in order."""
    return [tuple(_numbers(group)) for group in _GROUP.findall(text)]


def _chunk_boxes(chunk: str) -> list[Box]:
    """Boxes from one group: ``[x1,y1,x2,y2]`` lists, or consecutive corner pairs."""
    boxes: list[Box] = []
    pending: tuple[float, ...] | None = None
    for group in _number_groups(chunk):
        if len(group) in (4, 6):
            boxes.append(group)
            pending = None
        elif len(group) in (2, 3) and pending is not None and len(pending) == len(group):
            boxes.append(pending + group)
            pending = None
        else:
            pending = group if len(group) in (2, 3) else None
    if not boxes:
        values = tuple(_numbers(chunk))
        if len(values) in (4, 6):
            boxes.append(values)
    return boxes


def read_point_strict(text: str, dim: int | None) -> Point | None:
    """The point when ``text`` is exactly ``[x,y]`` or ``[x,y,z]`` (``dim`` coordinates, or
    either when ``None``) on the grid; ``None`` otherwise."""
    for size in (2, 3) if dim is None else (dim,):
        match = _STRICT_POINT[size].fullmatch(text.strip())
        if match:
            return _on_grid(match.groups())
    return None


def read_boxes_strict(text: str, dim: int | None) -> list[Box] | None:
    """The boxes when ``text`` is nothing but ``<|box_start|>box<|box_end|>`` groups.

    Parameters
    ----------
    text:
        Generated text without its object reference.
    dim:
        2 or 3; ``None`` accepts either, the same for every box.

    Returns
    -------
    list of tuple or None
        Every box in the order written; ``None`` when anything is out of format (a box of the
        wrong dimension, off the grid or with swapped corners among them).
    """
    text = text.strip()
    groups = _BOX_GROUP.findall(text)
    if not groups or "".join(f"{BOX_START}{g}{BOX_END}" for g in groups) != _unspaced(text):
        return None
    for size in (2, 3) if dim is None else (dim,):
        boxes = [_strict_box(group, size) for group in groups]
        if all(box is not None for box in boxes):
            return boxes
    return None


def _unspaced(text: str) -> str:
    """``text`` without white space between box groups (inside a group it stays)."""
    return re.sub(re.escape(BOX_END) + r"\s+(?=" + re.escape(BOX_START) + ")", BOX_END, text)


def _strict_box(group: str, dim: int) -> Box | None:
    match = _STRICT_BOX[dim].fullmatch(group)
    box = _on_grid(match.groups()) if match else None
    if box is None or any(box[i] > box[i + dim] for i in range(dim)):
        return None
    return box


def _on_grid(values: Sequence[str]) -> tuple[float, ...] | None:
    numbers = tuple(float(v) for v in values)
    return numbers if all(v <= GRID for v in numbers) else None
