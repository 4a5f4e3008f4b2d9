"""Image classification (stage 2): pick the record's class among its ``options``.

Classes are numbered from 0 (UMIT's convention): the answer is written ``1:pneumonia``
(Chinese ``1：肺炎``) and read back as the 0-based label. Headline: ``accuracy`` of strict
readings, so ``3: at the right:]`` is wrong even when 3 is the right class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared_model.metrics import accuracy, balanced_accuracy, macro_f1
from shared_model.sample import Geometry
from shared_model.tasks.base import Task, check_lang, pick_template
from shared_model.tasks.choices import (
    choice_texts,
    choice_to_source,
    format_choice,
    format_options,
    option_index,
    parse_choice,
    parse_choice_lenient,
)
from shared_model.tasks.fields import FieldError, require_options
from shared_model.tasks.scoring import OPTION_AUC, Metric

OPTION_BASE = 0
"""Classification numbers its classes from 0."""
FINDING = {"en": "Finding: {}.", "zh": "所见：{}。"}
"""A class as a finding, in a derived stage-1 caption."""

TEMPLATES = {
    "en": (
        "{question}\nCategories:\n{options}\nAnswer with the category number and name.",
        "Classify this medical image. {question}\n{options}",
        "{question}\nChoose the correct class from the following:\n{options}",
    ),
    "zh": (
        "{question}\n类别：\n{options}\n请回答类别的编号和名称。",
        "请对这张医学图像进行分类。{question}\n{options}",
        "{question}\n请从以下类别中选择正确的一项：\n{options}",
    ),
}


def _options(fields: Mapping[str, Any]) -> list[str]:
    return [str(option) for option in fields["options"]]


class ClassificationTask(Task):
    """Answer the record's ``question`` with one of its ``options``; ``label`` is the index."""

    name = "classification"
    stage = "instruct"
    text_fields = ("question",)
    closed_form = True
    discrete = True
    asks = ("question", "options")
    metrics = (
        Metric("accuracy", lenient=True),
        Metric("balanced_accuracy"),
        Metric("macro_f1"),
        OPTION_AUC,
    )
    headline = "accuracy"

    def validate(self, fields: Mapping[str, Any]) -> None:
        """``question``, ``options`` (two or more) and ``label``, an index into the options."""
        super().validate(fields)
        options = require_options(fields, required=True)
        label = fields.get("label")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(options):
            raise FieldError(f"label {label!r} is not an index into {len(options)} options")

    def to_source(self, value: Any, fields: Mapping[str, Any], geometry: Geometry) -> Any:
        """The class as ``{"index": i, "option": name}``."""
        return choice_to_source(value, _options(fields))

    def stage1_phrase(self, fields: Mapping[str, Any], lang: str) -> str | None:
        """The class as a finding: ``Finding: pneumonia.`` (``所见：肺炎。``)."""
        name = _options(fields)[self.reference(fields)].strip()
        return FINDING[check_lang(lang)].format(name) if name else None

    def _question_fields(self, given: Mapping[str, Any], geometry: Geometry) -> dict[str, Any]:
        return {"question": given["question"], "options": list(given["options"])}

    def prompt(self, fields: Mapping[str, Any], lang: str) -> str:
        """The question and the numbered classes; template chosen by question and classes."""
        question = str(fields["question"]).strip()
        options = _options(fields)
        template = pick_template(TEMPLATES, lang, "\n".join([question, *options]))
        return template.format(
            question=question, options=format_options(options, OPTION_BASE, lang)
        )

    def target(self, fields: Mapping[str, Any], lang: str) -> str:
        """``{label}:{class}`` (``：`` in Chinese)."""
        options = _options(fields)
        return format_choice(self.reference(fields), options, OPTION_BASE, lang)

    def option_targets(self, fields: Mapping[str, Any], lang: str) -> list[str]:
        """Each class's ``{n}:{class}``."""
        return choice_texts(_options(fields), OPTION_BASE, lang)

    def reference(self, fields: Mapping[str, Any]) -> int:
        """The 0-based label (a class name is accepted too)."""
        return option_index(fields["label"], _options(fields))

    def _parse(self, text: str, fields: Mapping[str, Any], lang: str) -> int | None:
        return parse_choice(text, _options(fields), OPTION_BASE, lang)

    def _parse_lenient(self, text: str, fields: Mapping[str, Any]) -> int | None:
        return parse_choice_lenient(text, _options(fields), OPTION_BASE)

    def _scores(
        self, predictions: Sequence[int | None], references: Sequence[int], lang: str
    ) -> dict[str, float]:
        """``accuracy``, and ``balanced_accuracy`` and ``macro_f1`` (averaged over the classes
        found in references)."""
        if not references:
            return {}
        return {
            "accuracy": accuracy(predictions, references),
            "balanced_accuracy": balanced_accuracy(predictions, references),
            "macro_f1": macro_f1(predictions, references),
        }
