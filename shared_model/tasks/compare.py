"""Image comparison (stage 1, feature alignment): how two images differ or agree."""

from __future__ import annotations

from typing import ClassVar

from shared_model.tasks.base import Templates
from shared_model.tasks.freetext import FreeTextTask


class CompareTask(FreeTextTask):
    """Write the record's comparison (``text``) of its two images."""

    name = "compare"
    stage = "align"
    field = "text"
    images = 2
    templates: ClassVar[Templates] = {
        "en": (
            "Compare these two medical images and describe the differences.",
            "What has changed between the first and the second image?",
            "Describe the similarities and differences between these two images.",
            "Look at both images and explain how they differ.",
        ),
        "zh": (
            "请比较这两张医学图像，并描述它们的差异。",
            "第一张图像和第二张图像相比有什么变化？",
            "请描述这两张图像的相同点和不同点。",
            "请观察这两张图像，并说明它们有何不同。",
        ),
    }
