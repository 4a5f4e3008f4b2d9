"""Checks of a record's task fields, shared by the tasks that validate them.

Each check raises :class:`FieldError` naming the field, the value found and what is allowed;
the archive reader turns it into a named problem of that record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared_model.sample import Geometry


class FieldError(ValueError):
    """A record's task field holds a value the task cannot use."""


def require_text(fields: Mapping[str, Any], key: str) -> str:
    """The non-empty string in ``fields[key]``."""
    value = fields.get(key)
    if not isinstance(value, str) or not value.strip():
        raise FieldError(f"field {key!r} must be a non-empty string, got {value!r}")
    return value


def require_options(fields: Mapping[str, Any], required: bool) -> list[str] | None:
    """The ``options`` list (at least two non-empty strings), ``None`` when absent and optional."""
    options = fields.get("options")
    if options is None and not required:
        return None
    if options is None:
        raise FieldError("field 'options' is required for this task")
    if (
        not isinstance(options, list)
        or len(options) < 2
        or not all(isinstance(o, str) and o.strip() for o in options)
    ):
        raise FieldError(f"field 'options' must list at least two strings, got {options!r}")
    return options


def is_numbers(value: Any) -> bool:
    """True for a list of real numbers (``bool`` is not a number here)."""
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )


def require_box(box: Any) -> None:
    """A box is ``[x1,y1,x2,y2]`` or ``[x1,y1,z1,x2,y2,z2]`` with the first corner below the
    second on every axis."""
    if not is_numbers(box) or len(box) not in (4, 6):
        raise FieldError(f"a box must be 4 or 6 numbers, got {box!r}")
    half = len(box) // 2
    if any(box[i] >= box[i + half] for i in range(half)):
        raise FieldError(f"box {box} has a corner not below and right of the other")


def require_point(point: Any) -> None:
    """A point is ``[x, y]`` or ``[x, y, z]``."""
    if not is_numbers(point) or len(point) not in (2, 3):
        raise FieldError(f"field 'point' must be [x, y] or [x, y, z], got {point!r}")


def require_inside(points: Sequence[Sequence[float]], geometry: Geometry) -> None:
    """Every point lies inside the decoded image or volume (source pixels or voxels)."""
    limits = (geometry.width, geometry.height)
    if geometry.depth is not None:
        limits += (geometry.depth,)
    for point in points:
        if len(point) != len(limits):
            kind = "volume" if geometry.is_volume else "2D image"
            raise FieldError(f"{len(point)}D coordinates {list(point)} given for a {kind}")
        if any(not 0 <= value <= limit for value, limit in zip(point, limits, strict=True)):
            raise FieldError(f"coordinates {list(point)} lie outside the image of size {limits}")
