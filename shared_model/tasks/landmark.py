"""Landmark detection (stage 2): one anatomical point, ``[x,y]`` or ``[x,y,z]`` on the grid.

The manifest gives ``point`` in source pixels (voxels); :meth:`LandmarkTask.to_grid` moves it
onto the grid of the fitted image. The strict reading takes exactly ``[x,y]`` (``[x,y,z]`` for
a volume) in grid integers; the lenient one the first point of the right size anywhere in the
answer. Headline: ``sdr`` (successful detection rate) of strict readings; ``mre`` (mean radial
error, grid units, lower is better) beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from shared_model.metrics import mean, radial_error
from shared_model.sample import GRID, Geometry
from shared_model.tasks.base import Task, check_lang, pick_template
from shared_model.tasks.coords import (
    Point,
    format_point,
    read_point,
    read_point_strict,
    to_grid_point,
)
from shared_model.tasks.fields import require_inside, require_point
from shared_model.tasks.scoring import Metric

DEFAULT_RADIUS = 20.0
"""SDR radius in grid units (2% of the image side)."""

TEMPLATES_2D = {
    "en": (
        "Please locate the {landmark} in this image and output its coordinates.",
        "Where is the {landmark}? Output the coordinates of the point.",
        "Find the {landmark} landmark in this image and give its position.",
    ),
    "zh": (
        "请定位图像中的{landmark}并输出其坐标。",
        "{landmark}在哪里？请输出该点的坐标。",
        "请在图像中找到{landmark}标志点，并给出其位置。",
    ),
}

TEMPLATES_3D = {
    "en": (
        "Please locate the {landmark} in this volume and output its 3D coordinates.",
        "Where is the {landmark} in this scan? Output the 3D coordinates of the point.",
        "Find the {landmark} landmark in this 3D image and give its position.",
    ),
    "zh": (
        "请定位该三维影像中的{landmark}并输出其三维坐标。",
        "该扫描中的{landmark}在哪里？请输出该点的三维坐标。",
        "请在三维图像中找到{landmark}标志点，并给出其位置。",
    ),
}


def _dimension(fields: Mapping[str, Any]) -> int | None:
    """2 or 3: the image's ``dimension`` when noted, else the length of the record's point."""
    point = fields.get("point")
    return fields.get("dimension") or (len(point) if point else None)


def miss_error(dimension: int) -> float:
    """Error charged for a missing point: the grid's diagonal, the largest error possible."""
    return GRID * math.sqrt(dimension)


class LandmarkTask(Task):
    """Point at the record's ``landmark``; ``point`` is on the 0-1000 grid.

    Parameters
    ----------
    radius:
        Success radius of ``sdr`` in grid units, default 20.
    """

    name = "landmark"
    stage = "instruct"
    text_fields = ("landmark",)
    closed_form = True
    asks = ("target",)
    metrics = (Metric("sdr", lenient=True), Metric("mre", higher_is_better=False))
    headline = "sdr"

    def __init__(self, radius: float = DEFAULT_RADIUS) -> None:
        if not radius > 0:
            raise ValueError(f"the SDR radius must be positive, got {radius}")
        self.radius = float(radius)

    def validate(self, fields: Mapping[str, Any]) -> None:
        """``landmark`` and ``point``, ``[x, y]`` or ``[x, y, z]``."""
        super().validate(fields)
        require_point(fields.get("point"))

    def to_grid(self, fields: Mapping[str, Any], geometry: Geometry) -> dict[str, Any]:
        """The point from source pixels (voxels) onto the grid, checked to lie in the image."""
        require_inside([fields["point"]], geometry)
        point = list(geometry.point_to_grid(fields["point"]))
        return {**fields, "point": point, "dimension": 3 if geometry.is_volume else 2}

    def to_source(self, value: Any, fields: Mapping[str, Any], geometry: Geometry) -> Any:
        """The point in source pixels (voxels), to two decimals."""
        if value is None:
            return None
        return [round(v, 2) for v in geometry.point_to_source(value)]

    def _question_fields(self, given: Mapping[str, Any], geometry: Geometry) -> dict[str, Any]:
        return {"landmark": given["target"], "dimension": 3 if geometry.is_volume else 2}

    def prompt(self, fields: Mapping[str, Any], lang: str) -> str:
        """A 2D or 3D (after the record's point) instruction, chosen by the landmark name."""
        landmark = str(fields["landmark"]).strip()
        templates = TEMPLATES_3D if _dimension(fields) == 3 else TEMPLATES_2D
        return pick_template(templates, lang, landmark).format(landmark=landmark)

    def target(self, fields: Mapping[str, Any], lang: str) -> str:
        """``[x,y]`` or ``[x,y,z]`` in grid integers."""
        check_lang(lang)
        return format_point(self.reference(fields))

    def reference(self, fields: Mapping[str, Any]) -> Point:
        """The point as the target writes it: integer grid positions."""
        return to_grid_point(fields["point"])

    def _parse(self, text: str, fields: Mapping[str, Any], lang: str) -> Point | None:
        return read_point_strict(text, _dimension(fields))

    def _parse_lenient(self, text: str, fields: Mapping[str, Any]) -> Point | None:
        return read_point(text, _dimension(fields))

    def _scores(
        self, predictions: Sequence[Point | None], references: Sequence[Point], lang: str
    ) -> dict[str, float]:
        """``sdr`` (share within ``radius``) and ``mre`` (mean radial error, grid units).

        A missing point costs :func:`miss_error` (1000·√2 in 2D, 1000·√3 in 3D) and never
        counts as a success.
        """
        if not references:
            return {}
        scored = [
            (p is not None, radial_error(p, r, miss_error(len(r))))
            for p, r in zip(predictions, references, strict=True)
        ]
        return {
            "sdr": mean([found and error <= self.radius for found, error in scored]),
            "mre": mean([error for _, error in scored]),
        }
