"""Pure pixel transforms: windowing, normalisation, letterboxing and slice resampling.

Everything here takes and returns numpy arrays; decoding lives in the format readers.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Linear VOI window (DICOM PS3.3 C.11.2.1.2 style) mapped to ``[0, 1]``."""
    low = centre - width / 2.0
    return np.clip((values.astype(np.float32) - low) / max(width, 1e-6), 0.0, 1.0)


def percentile_normalise(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map the ``[low, high]`` percentile range of ``values`` to ``[0, 1]``."""
    values = values.astype(np.float32)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    bottom, top = np.percentile(finite, [low, high])
    if top <= bottom:
        return np.zeros_like(values) if top == 0 else (values >= top).astype(np.float32)
    return np.clip((values - bottom) / (top - bottom), 0.0, 1.0)


def to_rgb8(unit: np.ndarray) -> np.ndarray:
    """``[0, 1]`` grey ``(..., H, W)`` or colour ``(..., H, W, 3)`` to uint8 RGB."""
    data = np.nan_to_num(unit, nan=0.0)
    data = np.rint(np.clip(data, 0.0, 1.0) * 255.0).astype(np.uint8)
    if data.shape[-1] == 3 and data.ndim >= 3:
        return data
    return np.repeat(data[..., None], 3, axis=-1)


def letterbox(image: np.ndarray, canvas: int) -> np.ndarray:
    """Fit a uint8 RGB ``(H, W, 3)`` image into ``canvas`` x ``canvas``, centred, zero-padded.

    The scale and offsets are the ones :class:`shared_model.sample.Geometry` assumes.
    """
    height, width = image.shape[:2]
    scale = canvas / max(width, height)
    new_width = max(1, round(width * scale))
    new_height = max(1, round(height * scale))
    resized = np.asarray(
        Image.fromarray(image).resize((new_width, new_height), Image.Resampling.BILINEAR)
    )
    out = np.zeros((canvas, canvas, 3), dtype=np.uint8)
    top = round((canvas - height * scale) / 2.0)
    left = round((canvas - width * scale) / 2.0)
    out[top : top + new_height, left : left + new_width] = resized[: canvas - top, : canvas - left]
    return out


def resample_slices(volume: np.ndarray, slices: int) -> np.ndarray:
    """Resample ``(D, ...)`` uniformly to ``slices`` along axis 0 (linear interpolation).

    Output slice ``i`` samples source depth ``(i + 0.5) * D / slices - 0.5``, so the slab each
    output slice stands for covers ``[i * D / slices, (i + 1) * D / slices)``.
    """
    depth = volume.shape[0]
    positions = np.clip((np.arange(slices) + 0.5) * depth / slices - 0.5, 0, depth - 1)
    below = np.floor(positions).astype(int)
    above = np.minimum(below + 1, depth - 1)
    weight = (positions - below).reshape(-1, *([1] * (volume.ndim - 1)))
    return volume[below] * (1.0 - weight) + volume[above] * weight
