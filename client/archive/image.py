"""PNG and JPEG files with Pillow (public datasets).

The size is read from the header (Pillow opens lazily) and checked before any pixel is
decoded: over ``[imaging] max_pixels``, or over Pillow's own decompression-bomb limit
(``Image.MAX_IMAGE_PIXELS``), the file is refused. Pillow only warns between that limit and
twice it; for a site archive the warning is an error, checked here rather than through the
process-wide warning filters, which the loader's threads share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from client.archive.decoded import Decoded, UnreadableImage, check_size
from client.config import ImagingConfig

BOMBS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def read_image(path: Path, imaging: ImagingConfig) -> Decoded:
    """A 2D image; greyscale stays one channel, everything else becomes RGB."""
    try:
        with Image.open(path) as image:
            refuse_bomb(path, image.size)
            check_size(path, image.size, imaging, "the image")
            image.load()
            if image.mode in ("L", "I", "I;16", "F"):
                values = np.asarray(image, dtype=np.float32)
                top = 255.0 if image.mode == "L" else max(float(values.max()), 1.0)
                return Decoded(values / top, is_volume=False)
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except UnreadableImage:
        raise
    except BOMBS as error:
        raise UnreadableImage(str(path), f"decompression bomb ({error})") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(str(path), f"unreadable image ({error})") from error
    return Decoded(rgb, is_volume=False)


def refuse_bomb(path: Path, size: tuple[int, int]) -> None:
    """Refuse an image over Pillow's decompression-bomb limit, where Pillow only warns."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = size[0] * size[1]
    if limit is not None and pixels > limit:
        raise UnreadableImage(
            str(path),
            f"decompression bomb ({size[0]} x {size[1]} = {pixels:,} pixels, over Pillow's "
            f"limit of {limit:,})",
        )
