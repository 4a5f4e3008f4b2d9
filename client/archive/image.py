"""PNG and JPEG files with Pillow (public datasets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from client.archive.decoded import Decoded, UnreadableImage


def read_image(path: Path) -> Decoded:
    """A 2D image; greyscale stays one channel, everything else becomes RGB."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("L", "I", "I;16", "F"):
                values = np.asarray(image, dtype=np.float32)
                top = 255.0 if image.mode == "L" else max(float(values.max()), 1.0)
                return Decoded(values / top, is_volume=False)
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise UnreadableImage(str(path), f"unreadable image ({error})") from error
    return Decoded(rgb, is_volume=False)
