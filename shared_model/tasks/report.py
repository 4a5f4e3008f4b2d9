"""Report generation (stage 2): a radiology report for the image or volume."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from shared_model.tasks.base import Templates
from shared_model.tasks.freetext import FreeTextTask


class ReportTask(FreeTextTask):
    """Write the record's ``report``."""

    name = "report"
    stage = "instruct"
    field = "report"

    def stage1_phrase(self, fields: Mapping[str, Any], lang: str) -> str | None:
        """The report as it is."""
        return self.reference(fields) or None

    templates: ClassVar[Templates] = {
        "en": (
            "Please write a radiology report for this image.",
            "Describe the findings of this medical image in the form of a report.",
            "Generate a diagnostic report for this examination.",
            "What are the findings in this scan? Write them up as a medical report.",
        ),
        "zh": (
            "请为这张医学图像撰写一份放射学报告。",
            "请以报告的形式描述这张医学图像的所见。",
            "请为这次检查生成一份诊断报告。",
            "这次扫描有哪些发现？请写成一份医学报告。",
        ),
    }
