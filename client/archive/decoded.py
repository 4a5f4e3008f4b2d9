"""What every format reader returns: pixels in ``[0, 1]`` and what is known about them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    """

    pixels: np.ndarray
    is_volume: bool
    spacing: tuple[float, ...] | None = None
    patient_id: str | None = None
    modality: str | None = None
    source_depth: int | None = None

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
