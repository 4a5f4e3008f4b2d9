"""The task contract: prompt, target, reference, parse and score for one task.

A task turns a manifest record's task fields into the user's instruction and the assistant's
answer text (for training), reads generated text back into a structured answer, and scores
structured answers. Instruction templates are chosen deterministically from the fields, so
every site renders the same record the same way.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from shared_model.metrics import check_lengths
from shared_model.sample import LANGUAGES

Templates = Mapping[str, tuple[str, ...]]
"""Instruction templates per language (``en``, ``zh``)."""


_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)


def check_lang(lang: str) -> str:
    """Return ``lang`` or raise ``ValueError`` naming the supported languages."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r} is not supported; use one of {LANGUAGES}")
    return lang


def pick_template(templates: Templates, lang: str, key: str) -> str:
    """Choose one template of ``lang`` by a stable hash of ``key``.

    Parameters
    ----------
    templates:
        Templates per language.
    lang:
        ``en`` or ``zh``.
    key:
        Text that identifies the record's prompt (the question, the target name ...); the same
        key always selects the same template, on every machine and in every process.
    """
    choices = templates[check_lang(lang)]
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return choices[int.from_bytes(digest[:8], "big") % len(choices)]


class Task(ABC):
    """One UMIT task.

    Subclasses set ``name`` and ``stage`` and implement the abstract methods; ``parse`` wraps
    :meth:`_parse` so that no generated text, however malformed, raises.
    """

    name: ClassVar[str]
    stage: ClassVar[str]

    @abstractmethod
    def prompt(self, fields: Mapping[str, Any], lang: str) -> str:
        """The user's instruction text, without image placeholders."""

    @abstractmethod
    def target(self, fields: Mapping[str, Any], lang: str) -> str:
        """The assistant's answer text the model learns."""

    @abstractmethod
    def reference(self, fields: Mapping[str, Any]) -> Any:
        """The structured ground-truth answer of a record."""

    @abstractmethod
    def _parse(self, text: str, fields: Mapping[str, Any]) -> Any:
        """Structured answer from generated text, ``None`` when none can be read."""

    @abstractmethod
    def score(
        self, predictions: Sequence[Any], references: Sequence[Any], lang: str
    ) -> dict[str, float]:
        """Metrics of one (task, language) group; ``None`` predictions are misses.

        Every dict has ``count`` (items scored) and ``misses`` (``None`` predictions); a metric
        whose group is empty (say, closed VQA in a group of open questions) is left out.
        """

    def parse(self, text: str, fields: Mapping[str, Any], lang: str) -> Any:
        """Structured answer from generated text; ``None`` (a miss) when it cannot be read.

        Parameters
        ----------
        text:
            The model's generated answer.
        fields:
            The record's task fields (options, expected box dimension ...).
        lang:
            The record's language; parsers accept either language's punctuation.

        Returns
        -------
        Any
            The structured answer, or ``None``. Never raises.
        """
        if not isinstance(text, str):
            return None
        try:
            return self._parse(text, fields)
        except _PARSE_ERRORS:
            return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, stage={self.stage!r})"


def base_counts(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    """The ``count`` and ``misses`` entries every score dict carries."""
    return {
        "count": float(check_lengths(predictions, references)),
        "misses": float(sum(p is None for p in predictions)),
    }
