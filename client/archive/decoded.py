"""What every format reader returns: pixels in ``[0, 1]`` and what is known about them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.config import ImagingConfig


class UnreadableImage(ValueError):
    """An image file that cannot become pixels; ``reason`` says why in plain words."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Decoded:
    """Pixels after the modality and VOI transforms: floats in ``[0, 1]``, or (2D images only)
    uint8 when a reader has already mapped them to grey levels (``0-255`` standing for ``0-1``).

    ``pixels`` is ``(H, W)`` or ``(H, W, 3)`` for a 2D image and ``(D, H, W)`` or
    ``(D, H, W, 3)`` for a volume; ``spacing`` is millimetres per pixel ``(x, y[, z])``.
    ``source_depth`` is the volume's slice count when ``pixels`` hold it already resampled
    to fewer slices (a series read for the model canvas); ``None`` when they hold every slice.
    ``warnings`` say what of the file was left out while the rest is used (a series' slices
    of another orientation), one sentence each.
    """

    pixels: np.ndarray
    is_volume: bool
    spacing: tuple[float, ...] | None = None
    patient_id: str | None = None
    modality: str | None = None
    source_depth: int | None = None
    warnings: tuple[str, ...] = ()

    def unit(self) -> np.ndarray:
        """The pixels as floats in ``[0, 1]``, whichever form the reader gave them in."""
        if self.pixels.dtype == np.uint8:
            return self.pixels.astype(np.float32) / np.float32(255.0)
        return self.pixels

    @property
    def size(self) -> tuple[int, int, int | None]:
        """``(width, height, depth)``; depth is ``None`` for a 2D image."""
        if self.is_volume:
            depth = self.source_depth or self.pixels.shape[0]
            return self.pixels.shape[2], self.pixels.shape[1], depth
        return self.pixels.shape[1], self.pixels.shape[0], None


def check_size(path: Path, shape: tuple[int, ...], imaging: ImagingConfig, source: str) -> None:
    """Refuse, before anything is decoded, an image whose header declares more pixels per plane
    than ``[imaging] max_pixels`` or, for a volume, more voxels than ``[imaging] max_voxels``.

    ``shape`` is ``(width, height)`` for a 2D image and ``(width, height, depth, ...)`` for a
    volume (every axis that decoding would fill); ``source`` says whose header it is.
    """
    plane = math.prod(shape[:2])
    if plane > imaging.max_pixels:
        raise UnreadableImage(
            str(path),
            f"too large: {source} declares {_dims(shape[:2])} = {plane:,} pixels per image, "
            f"over [imaging] max_pixels = {imaging.max_pixels:,}",
        )
    voxels = math.prod(shape)
    if len(shape) > 2 and voxels > imaging.max_voxels:
        raise UnreadableImage(
            str(path),
            f"too large: {source} declares {_dims(shape)} = {voxels:,} voxels, "
            f"over [imaging] max_voxels = {imaging.max_voxels:,}",
        )


def _dims(shape: tuple[int, ...]) -> str:
    return " x ".join(str(n) for n in shape)
