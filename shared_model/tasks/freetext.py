"""Tasks whose answer is free text: report generation, captioning and image comparison.

Free text is well-formed when it is prose in the record's language: more of its letters are
that language's (Chinese characters in a Chinese record, Latin letters in an English one) than
the other's, and it holds none of the model's special tokens. So a point ``[500,220]`` or a
grounded box written for a report request is malformed, as is an English report to a Chinese
request or a Chinese one that turns English; the lenient reading takes any non-empty text.
Scores are sacrebleu's BLEU with the tokenizer right for the record's language (``13a`` for
English, ``zh`` for Chinese: one token per character) and ROUGE-L on the same tokens; the
headline is ``bleu4``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from shared_model.metrics import corpus_bleu, rouge_l
from shared_model.tasks.base import Task, Templates, check_lang, pick_template
from shared_model.tasks.fields import require_text
from shared_model.tasks.scoring import Metric
from shared_model.tasks.text import has_cjk


class FreeTextTask(Task):
    """A task that answers with the text of one record field.

    Subclasses set ``field`` (the manifest field holding the answer) and ``templates``. The
    template is picked by a hash of that field, or of the empty string when the field is absent
    (inference on a new image), so prompts stay deterministic either way.
    """

    field: ClassVar[str]
    templates: ClassVar[Templates]
    metrics = (Metric("bleu4", lenient=True), Metric("bleu1", lenient=True), Metric("rouge_l"))
    headline = "bleu4"

    def validate(self, fields: Mapping[str, Any]) -> None:
        """The answer field holds a non-empty string."""
        require_text(fields, self.field)

    def prompt(self, fields: Mapping[str, Any], lang: str) -> str:
        """One of the task's instructions, chosen by the answer text."""
        return pick_template(self.templates, lang, str(fields.get(self.field, "")))

    def target(self, fields: Mapping[str, Any], lang: str) -> str:
        """The answer text itself, stripped."""
        check_lang(lang)
        return self.reference(fields)

    def reference(self, fields: Mapping[str, Any]) -> str:
        """The answer text, stripped."""
        return str(fields[self.field]).strip()

    def _parse(self, text: str, fields: Mapping[str, Any], lang: str) -> str | None:
        prose = text.strip()
        return prose if is_prose_in(prose, lang) else None

    def _parse_lenient(self, text: str, fields: Mapping[str, Any]) -> str | None:
        return text.strip() or None

    def _scores(
        self, predictions: Sequence[str | None], references: Sequence[str], lang: str
    ) -> dict[str, float]:
        """``bleu4``, ``bleu1`` (corpus BLEU) and ``rouge_l`` (mean F), all 0-1.

        A ``None`` prediction is an empty text.
        """
        if not references:
            return {}
        return {
            "bleu4": corpus_bleu(predictions, references, max_order=4, lang=lang),
            "bleu1": corpus_bleu(predictions, references, max_order=1, lang=lang),
            "rouge_l": rouge_l(predictions, references, lang),
        }


SPECIAL_TOKEN_MARK = "<|"
"""How Qwen2-VL's special tokens (``<|box_start|>``, ``<|im_end|>`` ...) begin."""


def is_prose_in(text: str, lang: str) -> bool:
    """``text`` is written in ``lang``: no special token, and more of its letters in that
    language's script than in the other's (Chinese characters for ``zh``, Latin letters for
    ``en``). A Chinese report may name ``CT``; one that turns English after two characters
    (``所见：双. Impression: lung.``) is not a Chinese report."""
    if SPECIAL_TOKEN_MARK in text:
        return False
    chinese = sum(has_cjk(char) for char in text)
    latin = sum(char.isascii() and char.isalpha() for char in text)
    return chinese > latin if check_lang(lang) == "zh" else latin > chinese
