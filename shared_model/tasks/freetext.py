"""Tasks whose answer is free text: report generation, captioning and image comparison."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from shared_model.metrics import corpus_bleu, rouge_l
from shared_model.tasks.base import Task, Templates, base_counts, check_lang, pick_template


class FreeTextTask(Task):
    """A task that answers with the text of one record field.

    Subclasses set ``field`` (the manifest field holding the answer) and ``templates``. The
    template is picked by a hash of that field, or of the empty string when the field is absent
    (inference on a new image), so prompts stay deterministic either way.
    """

    field: ClassVar[str]
    templates: ClassVar[Templates]

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

    def _parse(self, text: str, fields: Mapping[str, Any]) -> str | None:
        return text.strip() or None

    def score(
        self, predictions: Sequence[str | None], references: Sequence[str], lang: str
    ) -> dict[str, float]:
        """``bleu1``, ``bleu4`` (corpus BLEU) and ``rouge_l`` (mean F), all 0-1.

        Chinese and English share one tokenisation (:func:`shared_model.metrics.tokenize`:
        characters for Chinese, words otherwise); a ``None`` prediction is an empty text.
        """
        result = base_counts(predictions, references)
        if references:
            result["bleu1"] = corpus_bleu(predictions, references, max_order=1)
            result["bleu4"] = corpus_bleu(predictions, references, max_order=4)
            result["rouge_l"] = rouge_l(predictions, references)
        return result
