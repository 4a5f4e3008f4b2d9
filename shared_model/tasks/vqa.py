"""Medical visual question answering (stage 2), closed (with options) and open.

A question is closed when its record has a non-empty ``options`` list. Closed answers are
written ``2:no`` (Chinese ``2：否``) with options numbered from 1, and read back as the 0-based
option index; open answers are the answer text, read back as its normalised form.
Headline: ``closed_accuracy`` of strict readings; ``open_recall`` stands beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared_model.metrics import accuracy, mean, token_recall
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
from shared_model.tasks.text import normalize_answer

OPTION_BASE = 1
"""Closed VQA numbers its options from 1."""

OPEN_TEMPLATES = {
    "en": (
        "{question}",
        "{question}\nAnswer the question using a single word or phrase.",
        "Based on the image, answer the following question.\n{question}",
        "Look at the medical image and answer: {question}",
    ),
    "zh": (
        "{question}",
        "{question}\n请用一个词或短语回答问题。",
        "请根据图像回答以下问题。\n{question}",
        "观察这张医学图像并回答：{question}",
    ),
}

CLOSED_TEMPLATES = {
    "en": (
        "{question}\nOptions:\n{options}\nAnswer with the option's number and text.",
        "Based on the image, choose the correct answer.\n{question}\n{options}",
        "{question}\nChoose one of the following options:\n{options}",
    ),
    "zh": (
        "{question}\n选项：\n{options}\n请回答选项的编号和内容。",
        "请根据图像选择正确答案。\n{question}\n{options}",
        "{question}\n请从以下选项中选择一项：\n{options}",
    ),
}


def _options(fields: Mapping[str, Any]) -> list[str] | None:
    options = fields.get("options")
    return [str(option) for option in options] if options else None


class VQATask(Task):
    """Answer the record's ``question``; closed when it has ``options``."""

    name = "vqa"
    stage = "instruct"
    text_fields = ("question", "answer")
    closed_form = True
    discrete = True
    asks = ("question",)
    metrics = (Metric("closed_accuracy", lenient=True), Metric("open_recall"), OPTION_AUC)
    headline = "closed_accuracy"

    def validate(self, fields: Mapping[str, Any]) -> None:
        """``question`` and ``answer``; a closed question's ``options`` hold its answer."""
        super().validate(fields)
        options = require_options(fields, required=False)
        if options is not None and fields["answer"] not in options:
            raise FieldError(f"answer {fields['answer']!r} is not one of the options {options}")

    def to_source(self, value: Any, fields: Mapping[str, Any], geometry: Geometry) -> Any:
        """A closed answer as ``{"index": i, "option": text}``, an open one as it is."""
        return choice_to_source(value, _options(fields) or [])

    def stage1_phrase(self, fields: Mapping[str, Any], lang: str) -> str | None:
        """The question followed by its answer: ``Is there a lesion? yes``."""
        question, answer = str(fields["question"]).strip(), str(fields["answer"]).strip()
        joint = "" if lang == "zh" else " "
        return f"{question}{joint}{answer}" if question and answer else None

    def _question_fields(self, given: Mapping[str, Any], geometry: Geometry) -> dict[str, Any]:
        fields: dict[str, Any] = {"question": given["question"]}
        if given.get("options"):
            fields["options"] = list(given["options"])
        return fields

    def prompt(self, fields: Mapping[str, Any], lang: str) -> str:
        """The question, with its numbered options when closed; template chosen by question."""
        question = str(fields["question"]).strip()
        options = _options(fields)
        if options is None:
            return pick_template(OPEN_TEMPLATES, lang, question).format(question=question)
        template = pick_template(CLOSED_TEMPLATES, lang, question)
        return template.format(
            question=question, options=format_options(options, OPTION_BASE, lang)
        )

    def target(self, fields: Mapping[str, Any], lang: str) -> str:
        """``{n}:{option}`` (``：`` in Chinese) when closed, else the answer text."""
        options = _options(fields)
        if options is None:
            check_lang(lang)
            return str(fields["answer"]).strip()
        index = option_index(str(fields["answer"]), options)
        return format_choice(index, options, OPTION_BASE, lang)

    def option_targets(self, fields: Mapping[str, Any], lang: str) -> list[str] | None:
        """Each option's ``{n}:{option}`` when closed; ``None`` for an open question."""
        options = _options(fields)
        return None if options is None else choice_texts(options, OPTION_BASE, lang)

    def reference(self, fields: Mapping[str, Any]) -> int | str:
        """0-based index of the option matching the answer when closed, else the normalised answer.

        The answer is text in both cases: ``2`` with options ``["1", "2", "3"]`` is option 2.
        """
        options = _options(fields)
        if options is None:
            return normalize_answer(str(fields["answer"]))
        return option_index(str(fields["answer"]), options)

    def _parse(self, text: str, fields: Mapping[str, Any], lang: str) -> int | str | None:
        options = _options(fields)
        if options is None:
            return normalize_answer(text) or None
        return parse_choice(text, options, OPTION_BASE, lang)

    def _parse_lenient(self, text: str, fields: Mapping[str, Any]) -> int | None:
        options = _options(fields)
        return None if options is None else parse_choice_lenient(text, options, OPTION_BASE)

    def _scores(
        self, predictions: Sequence[Any], references: Sequence[int | str], lang: str
    ) -> dict[str, float]:
        """``closed_accuracy`` and ``open_recall`` with ``closed_count`` and ``open_count``.

        Closed items are those whose reference is an option index. ``open_recall`` is the mean
        fraction of reference tokens found in the prediction (characters for Chinese); any
        non-empty open answer is well-formed.
        """
        pairs = list(zip(predictions, references, strict=True))
        closed = [(p, r) for p, r in pairs if isinstance(r, int)]
        open_ = [(p if isinstance(p, str) else None, r) for p, r in pairs if isinstance(r, str)]
        result = {"closed_count": float(len(closed)), "open_count": float(len(open_))}
        if closed:
            result["closed_accuracy"] = accuracy([p for p, _ in closed], [r for _, r in closed])
        if open_:
            result["open_recall"] = mean([token_recall(p, r) for p, r in open_])
        return result
