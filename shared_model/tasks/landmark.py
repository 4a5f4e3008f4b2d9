"""Landmark detection (stage 2): one anatomical point, ``[x,y]`` or ``[x,y,z]`` on the grid."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from shared_model.metrics import mean, radial_error
from shared_model.sample import GRID
from shared_model.tasks.base import Task, base_counts, check_lang, pick_template
from shared_model.tasks.coords import Point, format_point, read_point, to_grid_point

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
    point = fields.get("point")
    return len(point) if point else None


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

    def __init__(self, radius: float = DEFAULT_RADIUS) -> None:
        if not radius > 0:
            raise ValueError(f"the SDR radius must be positive, got {radius}")
        self.radius = float(radius)

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

    def _parse(self, text: str, fields: Mapping[str, Any]) -> Point | None:
        return read_point(text, _dimension(fields))

    def score(
        self, predictions: Sequence[Point | None], references: Sequence[Point], lang: str
    ) -> dict[str, float]:
        """``mre`` (mean radial error, grid units) and ``sdr`` (share within ``radius``).

        A missing point costs :func:`miss_error` (1000·√2 in 2D, 1000·√3 in 3D) and never
        counts as a success.
        """
        result = base_counts(predictions, references)
        if references:
            scored = [
                (p is not None, radial_error(p, r, miss_error(len(r))))
                for p, r in zip(predictions, references, strict=True)
            ]
            result["mre"] = mean([error for _, error in scored])
            result["sdr"] = mean([found and error <= self.radius for found, error in scored])
        return result
