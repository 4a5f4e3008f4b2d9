"""Synthetic chest X-rays and CT volumes with lesions and landmarks of known class and place.

Lesion classes differ in what a small model can see at 112x112: a ``nodule`` is small and
bright, a ``mass`` large and bright, a ``cyst`` large and dark. The landmark is a bright ring
marker. Coordinates are returned in source pixels (x = column, y = row, z = slice).

A :class:`Scanner` says how the anatomy is imaged: the hospitals' scanner frames the body
tightly; :data:`PUBLIC_SCANNER`, which images the public archive the tiny base is pretrained
on (:mod:`shared_model.tiny.public`), frames it with a wider field of view and twice the noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LESION_CLASSES = ("nodule", "mass", "cyst")
# class -> (radius as a fraction of the image, intensity offset over lung tissue)
LESION_LOOK = {"nodule": (0.07, 900.0), "mass": (0.15, 900.0), "cyst": (0.15, -450.0)}


@dataclass(frozen=True)
class Scanner:
    """How an image frames, exposes and presents the anatomy: ``border`` is the field of view
    added on every side, as a fraction of the anatomy's own side; ``noise`` scales the
    acquisition noise (a lower dose: more noise); ``window`` is the VOI window (centre, width
    of the stored values) a radiograph's DICOM file carries, as a clinical CR file does.

    The window is what makes the landmark visible. Without one a site stretches a radiograph's
    0.5-99.5 percentiles, and the marker's ring, under half a percent of the image, is clipped
    to white together with the bright body around it: ``python benchmarks/point_learning.py
    --window percentile`` (the tiny base built before the window, fine-tuned on every parameter,
    without noise, 16 radiographs a step) points no closer than the mean point after 300 steps
    (mean error 59 grid units, the axes uncorrelated with the truth) and needs 2,000 to 3,000 to
    learn it (mean error 27 and 18), where under this window 300 steps reach a mean error of 20
    and an SDR of 0.63 (axes correlating 0.95 and 0.87; 600 steps: 12 and 0.85). Under it the
    cyst lies below the window (black, as air) inside the grey lung, and a lesion over the body
    stands out from it where the percentile stretch left both near white."""

    border: float = 0.0
    noise: float = 1.0
    window: tuple[float, float] = (1700.0, 2400.0)

    def grid(self, size: int) -> tuple[int, np.ndarray, np.ndarray]:
        """The border in pixels and the image's row and column coordinates in anatomy units
        (0 to 1 across the anatomy's ``size`` pixels, beyond that in the border)."""
        pad = round(self.border * size)
        yy, xx = (np.mgrid[0 : size + 2 * pad, 0 : size + 2 * pad] - pad) / size
        return pad, yy, xx


HOSPITAL_SCANNER = Scanner()
"""The synthetic hospitals' scanner."""
PUBLIC_SCANNER = Scanner(border=1 / 6, noise=2.0)
"""The public archive's scanner: a field of view a third wider (96-pixel anatomy in a
128-pixel radiograph) and twice the noise."""


@dataclass(frozen=True)
class Finding:
    """What a phantom shows: lesion (or none), its side and box, the landmark point."""

    lesion: str | None
    side: str | None
    box: tuple[float, ...] | None
    landmark: tuple[float, ...]


def chest_xray(
    rng: np.random.Generator,
    lesion: str | None,
    size: int = 96,
    scanner: Scanner = HOSPITAL_SCANNER,
) -> tuple:
    """Stored uint16 values of a chest-like radiograph and its :class:`Finding`, the anatomy
    ``size`` pixels across as ``scanner`` frames it."""
    pad, yy, xx = scanner.grid(size)
    image = np.full(xx.shape, 600.0)
    body = ((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.48) ** 2 < 1
    image[body] = 1500.0
    for centre in (0.3, 0.7):
        lung = ((xx - centre) / 0.16) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
        image[lung] = 900.0
    image += rng.normal(0, 40 * scanner.noise, image.shape)
    side, box = None, None
    if lesion is not None:
        side = str(rng.choice(["left", "right"]))
        radius, offset = LESION_LOOK[lesion]
        cx = (0.3 if side == "right" else 0.7) + rng.uniform(-0.04, 0.04)  # patient's side
        cy = 0.5 + rng.uniform(-0.12, 0.12)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
        image[disc] += offset
        box = _box(cx, cy, radius, size, pad)
    mx, my = rng.uniform(0.42, 0.58), rng.uniform(0.15, 0.3)
    ring = np.abs(np.hypot(xx - mx, yy - my) - 0.03) < 0.012
    image[ring] = 3200.0
    finding = Finding(lesion, side, box, (mx * size + pad, my * size + pad))
    return np.clip(image, 0, 4095).astype(np.uint16), finding


def ct_volume(
    rng: np.random.Generator,
    lesion: str | None,
    size: int = 48,
    slices: int = 16,
    scanner: Scanner = HOSPITAL_SCANNER,
):
    """A CT-like volume in HU ``(slices, rows, columns)`` and its :class:`Finding`, the
    anatomy ``size`` pixels across in-plane as ``scanner`` frames it."""
    pad, rows, columns = scanner.grid(size)
    depths = (np.arange(slices) / slices)[:, None, None]
    zz, yy, xx = np.broadcast_arrays(depths, rows[None], columns[None])
    volume = np.full(xx.shape, -1000.0)
    body = ((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.4) ** 2 < 1
    volume[body] = 40.0
    for centre in (0.3, 0.7):
        lung = ((xx - centre) / 0.15) ** 2 + ((yy - 0.5) / 0.28) ** 2 < 1
        volume[lung] = -700.0
    volume += rng.normal(0, 15 * scanner.noise, volume.shape)
    side, box = None, None
    if lesion is not None:
        side = str(rng.choice(["left", "right"]))
        radius, offset = LESION_LOOK[lesion]
        cx, cy = (0.3 if side == "right" else 0.7), 0.5 + rng.uniform(-0.08, 0.08)
        cz = rng.uniform(0.35, 0.65)
        ball = (xx - cx) ** 2 + (yy - cy) ** 2 + ((zz - cz) * slices / size) ** 2 < radius**2
        volume[ball] += 900.0 if offset > 0 else -250.0
        depth = radius * size
        x1, y1, x2, y2 = _box(cx, cy, radius, size, pad)
        box = (
            x1,
            y1,
            max(0.0, cz * slices - depth),
            x2,
            y2,
            min(float(slices), cz * slices + depth),
        )
    mx, my, mz = 0.5, rng.uniform(0.2, 0.3), rng.uniform(0.3, 0.7)
    marker = (np.abs(xx - mx) < 0.04) & (np.abs(yy - my) < 0.04) & (np.abs(zz - mz) < 0.1)
    volume[marker] = 1500.0
    return volume, Finding(lesion, side, box, (mx * size + pad, my * size + pad, mz * slices))


def _box(
    cx: float, cy: float, radius: float, size: int, pad: int
) -> tuple[float, float, float, float]:
    """A disc's box within the anatomy, in image pixels (``pad`` of border before it)."""
    x1, y1 = max(0.0, (cx - radius) * size), max(0.0, (cy - radius) * size)
    x2, y2 = min(float(size), (cx + radius) * size), min(float(size), (cy + radius) * size)
    return (x1 + pad, y1 + pad, x2 + pad, y2 + pad)
