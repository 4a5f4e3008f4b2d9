"""Image captioning (stage 1, feature alignment): describe one image."""

from __future__ import annotations

from typing import ClassVar

from shared_model.tasks.base import Templates
from shared_model.tasks.freetext import FreeTextTask


class CaptionTask(FreeTextTask):
    """Write the record's caption (``text``)."""

    name = "caption"
    stage = "align"
    field = "text"
    templates: ClassVar[Templates] = {
        "en": (
            "Describe this medical image.",
            "Write a caption for this medical image.",
            "What does this image show? Describe it briefly.",
            "Give a short description of the content of this image.",
        ),
        "zh": (
            "请描述这张医学图像。",
            "请为这张医学图像写一段说明。",
            "这张图像显示了什么？请简要描述。",
            "请简要描述这张图像的内容。",
        ),
    }
