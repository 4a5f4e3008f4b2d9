"""The unit every part of FedUMIT agrees on: one annotated record with its pixels loaded.

A :class:`Sample` is what archive ingestion produces on a site and what collation turns into
model inputs. Pixels are already at the model's resolution; :class:`Geometry` remembers how
they got there, so that boxes and points move between source pixels (or voxels) and Qwen2-VL's
0-1000 grid in both directions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GRID = 1000.0
"""Qwen2-VL expresses boxes and points on a 0-1000 grid over the image."""

LANGUAGES = ("en", "zh")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Geometry:
    """How a source image or volume was fitted into the model's square canvas.

    The source (``width`` x ``height`` pixels, ``depth`` slices for a volume) is scaled by one
    factor to fit a ``canvas`` x ``canvas`` square and centred (letterboxed). Slices of a volume
    are resampled uniformly along the slice axis, so depth maps linearly onto the grid.

    Parameters
    ----------
    width, height:
        Source size in pixels.
    canvas:
        Side of the square model image in pixels.
    depth:
        Number of source slices; ``None`` for a 2D image.
    spacing:
        Source voxel size in millimetres ``(x, y[, z])``; ``None`` when unknown.
    """

    width: int
    height: int
    canvas: int
    depth: int | None = None
    spacing: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.canvas <= 0:
            raise ValueError(f"Geometry needs positive sizes, got {self}")
        if self.depth is not None and self.depth <= 0:
            raise ValueError(f"Geometry depth must be positive, got {self.depth}")

    @property
    def is_volume(self) -> bool:
        """True for a 3D volume."""
        return self.depth is not None

    @property
    def scale(self) -> float:
        """Source pixels to canvas pixels."""
        return self.canvas / max(self.width, self.height)

    @property
    def offset(self) -> tuple[float, float]:
        """Canvas position of the source's top-left corner (letterbox padding)."""
        return (
            (self.canvas - self.width * self.scale) / 2.0,
            (self.canvas - self.height * self.scale) / 2.0,
        )

    def point_to_grid(self, point: Sequence[float]) -> tuple[float, ...]:
        """Map ``[x, y]`` (or ``[x, y, z]`` for a volume) from source units to the 0-1000 grid."""
        ox, oy = self.offset
        gx = (point[0] * self.scale + ox) * GRID / self.canvas
        gy = (point[1] * self.scale + oy) * GRID / self.canvas
        if len(point) == 2:
            return (gx, gy)
        return (gx, gy, point[2] * GRID / self._require_depth())

    def point_to_source(self, point: Sequence[float]) -> tuple[float, ...]:
        """Inverse of :meth:`point_to_grid`."""
        ox, oy = self.offset
        sx = (point[0] * self.canvas / GRID - ox) / self.scale
        sy = (point[1] * self.canvas / GRID - oy) / self.scale
        if len(point) == 2:
            return (sx, sy)
        return (sx, sy, point[2] * self._require_depth() / GRID)

    def box_to_grid(self, box: Sequence[float]) -> tuple[float, ...]:
        """Map ``[x1, y1, x2, y2]`` or ``[x1, y1, z1, x2, y2, z2]`` to the grid."""
        half = len(box) // 2
        return self.point_to_grid(box[:half]) + self.point_to_grid(box[half:])

    def box_to_source(self, box: Sequence[float]) -> tuple[float, ...]:
        """Inverse of :meth:`box_to_grid`."""
        half = len(box) // 2
        return self.point_to_source(box[:half]) + self.point_to_source(box[half:])

    def to_millimetres(self, point: Sequence[float]) -> tuple[float, ...]:
        """Source pixel or voxel coordinates to millimetres (needs ``spacing``)."""
        if self.spacing is None:
            raise ValueError("this image has no known pixel spacing")
        return tuple(float(p) * s for p, s in zip(point, self.spacing, strict=False))

    def _require_depth(self) -> int:
        if self.depth is None:
            raise ValueError("a 3D coordinate was given for a 2D image")
        return self.depth

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-safe)."""
        return {
            "width": self.width,
            "height": self.height,
            "canvas": self.canvas,
            "depth": self.depth,
            "spacing": list(self.spacing) if self.spacing is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        spacing = data.get("spacing")
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            canvas=int(data["canvas"]),
            depth=None if data.get("depth") is None else int(data["depth"]),
            spacing=None if spacing is None else tuple(float(s) for s in spacing),
        )


@dataclass(frozen=True)
class Sample:
    """One record ready for collation.

    Parameters
    ----------
    record_id, patient_id:
        From the manifest; they never leave the site.
    task, lang, split:
        Task name (see :mod:`shared_model.tasks`), language (``en``/``zh``) and split
        (``train``/``val``/``test``).
    images:
        One array per manifest image: ``uint8`` ``(H, W, C)`` for a 2D image, or
        ``(slices, H, W, C)`` for a volume, already at the model's canvas size; ``C`` is 3
        for colour and 1 for grey (a third of the memory; the model input copies it to RGB).
    geometries:
        One :class:`Geometry` per image.
    fields:
        The task's fields from the manifest, with ``boxes`` and ``point`` already mapped to the
        0-1000 grid of the first image.
    modality:
        DICOM-style modality (``CT``, ``MR``, ``CR`` ...) when known.
    """

    record_id: str
    patient_id: str
    task: str
    lang: str
    split: str
    images: tuple[np.ndarray, ...]
    geometries: tuple[Geometry, ...]
    fields: Mapping[str, Any] = field(default_factory=dict)
    modality: str | None = None

    def __post_init__(self) -> None:
        if self.lang not in LANGUAGES:
            raise ValueError(
                f"record {self.record_id!r}: language {self.lang!r} not in {LANGUAGES}"
            )
        if len(self.images) != len(self.geometries):
            raise ValueError(f"record {self.record_id!r}: one geometry per image is required")
        for image in self.images:
            if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] not in (1, 3):
                raise ValueError(
                    f"record {self.record_id!r}: images must be uint8 (H, W, C) or "
                    f"(slices, H, W, C) with C 1 (grey) or 3 (RGB), got {image.dtype} {image.shape}"
                )

    @property
    def is_volume(self) -> bool:
        """True when the (first) image is a 3D volume."""
        return self.images[0].ndim == 4
