"""Boxes and points on Qwen2-VL's 0-1000 grid: quantising, writing and reading them back.

Written forms (integers on the grid):

- 2D box ``(x1,y1),(x2,y2)``; 3D box ``[(x1,y1,z1),(x2,y2,z2)]``; detection wraps each box in
  ``<|box_start|>``/``<|box_end|>``.
- 2D point ``[x,y]``; 3D point ``[x,y,z]``.

Reading is lenient: full-width brackets and commas, spaces, decimals, swapped corners,
``[x1,y1,x2,y2]`` lists, coordinates outside the grid (clamped) and missing special tokens are
all accepted.
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
