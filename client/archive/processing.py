"""Pure pixel transforms: windowing, normalisation, letterboxing and slice resampling.

Everything here takes and returns numpy arrays; decoding lives in the format readers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

PERCENTILE_SAMPLES = 1 << 16  # values ranked for a percentile window; beyond, a regular grid
REDUCING_GAP = 1.0  # Pillow's two-step downscale: integer box reduce, then the last >= 1x


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
    return stretch(values, bottom, top)


def integer_percentiles(stored: np.ndarray, percents: Sequence[float]) -> np.ndarray:
    """``np.percentile(sampled, percents)`` (linear method) of 8- or 16-bit integers, exactly,
    from a histogram instead of a partial sort.

    ``sampled`` is ``stored`` itself up to ``PERCENTILE_SAMPLES`` values, and beyond that every
    ``step``-th row and column (every ``step``-th value of a 1D array): a regular grid of at
    least a quarter of that many values, which moves a percentile of a real image by a few
    hundredths of a percent at most, for a fraction of the cost of reading every pixel.
    """
    flat = percentile_sample(stored).ravel()
    offset = min(int(flat.min()), 0)  # signed values are shifted to start at zero
    counts = np.bincount(flat.astype(np.int32) - offset if offset else flat)
    at_or_below = np.cumsum(counts)
    position = np.asarray(percents, dtype=np.float64) / 100.0 * (flat.size - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, flat.size - 1)
    low_value = np.searchsorted(at_or_below, lower, side="right") + offset
    high_value = np.searchsorted(at_or_below, upper, side="right") + offset
    return low_value + (high_value - low_value) * (position - lower)


def percentile_sample(stored: np.ndarray) -> np.ndarray:
    """The values :func:`integer_percentiles` ranks: all of them, or a regular grid."""
    if stored.size <= PERCENTILE_SAMPLES:
        return stored
    if stored.ndim < 2:
        return stored[:: -(-stored.size // PERCENTILE_SAMPLES)]
    step = int(np.ceil(np.sqrt(stored.size / PERCENTILE_SAMPLES)))
    return stored[..., ::step, ::step]


def stretch(values: np.ndarray, bottom: float, top: float) -> np.ndarray:
    """Map ``[bottom, top]`` of ``values`` (float32) linearly to ``[0, 1]``."""
    if top <= bottom:
        return np.zeros_like(values) if top == 0 else (values >= top).astype(np.float32)
    return np.clip((values - bottom) / (top - bottom), 0.0, 1.0)


def to_uint8(unit: np.ndarray) -> np.ndarray:
    """``[0, 1]`` values (grey or colour, any shape) to uint8; NaN becomes 0."""
    data = np.clip(unit, 0.0, 1.0)
    np.nan_to_num(data, copy=False, nan=0.0)
    data *= 255.0
    return np.rint(data, out=data).astype(np.uint8)


def to_canvas_pixels(image: np.ndarray, canvas: int) -> np.ndarray:
    """A 2D image, ``[0, 1]`` floats or uint8, grey ``(H, W)`` or RGB ``(H, W, 3)``,
    letterboxed as uint8 ``(canvas, canvas, C)``: grey keeps one channel (a third of the
    memory and cache; the model input expands it to RGB)."""
    pixels = image if image.dtype == np.uint8 else to_uint8(image)
    boxed = letterbox(pixels, canvas)
    return boxed if boxed.ndim == 3 else boxed[..., None]


def letterbox(image: np.ndarray, canvas: int) -> np.ndarray:
    """Fit a uint8 ``(H, W)`` or RGB ``(H, W, 3)`` image into ``canvas`` x ``canvas``, centred,
    zero-padded.

    Shrinking averages areas (Pillow's box filter, after an integer ``reduce`` that keeps the
    last step at least ``REDUCING_GAP``: a 1024-pixel radiograph goes 1024 -> 512 -> canvas at
    a third of the cost of one bilinear pass); enlarging is bilinear. The scale and offsets are
    the ones :class:`shared_model.sample.Geometry` assumes.
    """
    height, width = image.shape[:2]
    scale = canvas / max(width, height)
    new_width = max(1, round(width * scale))
    new_height = max(1, round(height * scale))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    resized = np.asarray(
        Image.fromarray(image).resize((new_width, new_height), resample, reducing_gap=REDUCING_GAP)
    )
    out = np.zeros((canvas, canvas, *image.shape[2:]), dtype=np.uint8)
    top = round((canvas - height * scale) / 2.0)
    left = round((canvas - width * scale) / 2.0)
    out[top : top + new_height, left : left + new_width] = resized[: canvas - top, : canvas - left]
    return out


def resample_slices(volume: np.ndarray, slices: int) -> np.ndarray:
    """Resample ``(D, ...)`` uniformly to ``slices`` along axis 0 (linear interpolation).

    Output slice ``i`` samples source depth ``(i + 0.5) * D / slices - 0.5``, so the slab each
    output slice stands for covers ``[i * D / slices, (i + 1) * D / slices)``.
    """
    below, above, weight = resample_weights(volume.shape[0], slices)
    weight = weight.reshape(-1, *([1] * (volume.ndim - 1)))
    return volume[below] * (1.0 - weight) + volume[above] * weight


def resample_weights(depth: int, slices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source slices below and above each output slice of :func:`resample_slices`, and the
    weight of the one above."""
    positions = np.clip((np.arange(slices) + 0.5) * depth / slices - 0.5, 0, depth - 1)
    below = np.floor(positions).astype(int)
    above = np.minimum(below + 1, depth - 1)
    return below, above, positions - below
