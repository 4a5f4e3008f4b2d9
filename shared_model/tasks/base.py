"""The task contract: everything FedUMIT knows about one task, in one class.

A task owns, for its records: the manifest fields it needs and their validation, how its
coordinates move between source pixels (voxels) and Qwen2-VL's 0-1000 grid, the instruction per
language, the answer text the model learns, a strict and a lenient reading of generated text,
its metrics, which of them is the headline, which direction is better for each, and what a
record says about its image in words (the stage-1 caption a site derives from it). Instruction
templates are chosen deterministically from the fields, so every site renders the same record
the same way.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from shared_model.sample import LANGUAGES, Geometry
from shared_model.tasks.fields import FieldError, require_text
from shared_model.tasks.scoring import (
    LENIENT_SUFFIX,
    WELL_FORMED_METRIC,
    Metric,
    Reading,
    group_counts,
)

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

    Subclasses set the class attributes and implement the abstract methods. ``parse`` and
    ``parse_lenient`` wrap :meth:`_parse` and :meth:`_parse_lenient` so that no generated
    text, however malformed, raises.

    Attributes
    ----------
    name, stage:
        Registry name and the training stage (``align`` or ``instruct``).
    text_fields:
        Manifest fields that must hold non-empty strings.
    images:
        Images per record (``compare`` has two).
    closed_form:
        True when answers have a checkable form (options, boxes, points), not free text.
    discrete:
        True when every answer is one of a few values (an option, a class), so a model that
        answers the same to every question has a score: the majority-answer baseline.
    asks:
        What a question asked at inference must give (``question``, ``options``, ``target``).
    metrics:
        The task's scores besides ``well_formed``; ``headline`` names the one every report leads
        with (always scored on strict readings).
    """

    name: ClassVar[str]
    stage: ClassVar[str]
    text_fields: ClassVar[tuple[str, ...]] = ()
    images: ClassVar[int] = 1
    closed_form: ClassVar[bool] = False
    discrete: ClassVar[bool] = False
    asks: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[tuple[Metric, ...]]
    headline: ClassVar[str]

    @abstractmethod
    def prompt(self, fields: Mapping[str, Any], lang: str) -> str:
        """The user's instruction text, without image placeholders."""

    @abstractmethod
    def target(self, fields: Mapping[str, Any], lang: str) -> str:
        """The assistant's answer text the model learns."""

    @abstractmethod
    def reference(self, fields: Mapping[str, Any]) -> Any:
        """The structured ground-truth answer of a record."""

    def option_targets(self, fields: Mapping[str, Any], lang: str) -> list[str] | None:
        """The answer text that chooses each of the record's options, in option order, when its
        answer is one of listed options (its :meth:`reference` is then the index of the
        right one); ``None`` for any other record."""
        return None

    @abstractmethod
    def _parse(self, text: str, fields: Mapping[str, Any], lang: str) -> Any:
        """Structured answer when ``text`` is exactly in the task's format, else ``None``."""

    def _parse_lenient(self, text: str, fields: Mapping[str, Any]) -> Any:
        """What a lenient reader finds where the strict reading found nothing; by default
        nothing."""
        return None

    @abstractmethod
    def _scores(
        self, predictions: Sequence[Any], references: Sequence[Any], lang: str
    ) -> dict[str, float]:
        """The task's metrics of one group on one reading (``None`` predictions are wrong)."""

    def validate(self, fields: Mapping[str, Any]) -> None:
        """Check a manifest record's task fields; raise :class:`FieldError` naming the field."""
        for key in self.text_fields:
            require_text(fields, key)

    def to_grid(self, fields: Mapping[str, Any], geometry: Geometry) -> dict[str, Any]:
        """The fields with source coordinates mapped onto the grid of the fitted image.

        Raises :class:`FieldError` when a coordinate lies outside the decoded image.
        """
        return dict(fields)

    def to_source(self, value: Any, fields: Mapping[str, Any], geometry: Geometry) -> Any:
        """A structured answer for people: coordinates in source units, options by name."""
        return value

    def stage1_phrase(self, fields: Mapping[str, Any], lang: str) -> str | None:
        """What the record says about its image in words, in ``lang``, for the stage-1 caption a
        site derives from its records (:mod:`client.stage1`); ``None`` when it says nothing."""
        return None

    def missing(self, given: Mapping[str, Any]) -> list[str]:
        """The keys of :attr:`asks` that a question asked at inference leaves empty."""
        return [key for key in self.asks if not given.get(key)]

    def question_fields(self, given: Mapping[str, Any], geometry: Geometry) -> dict[str, Any]:
        """The task fields of a question asked at inference about an image fitted by
        ``geometry``; :class:`FieldError` when a key of :attr:`asks` is missing."""
        missing = self.missing(given)
        if missing:
            raise FieldError(f"task {self.name} needs " + ", ".join(missing))
        return self._question_fields(given, geometry)

    def _question_fields(self, given: Mapping[str, Any], geometry: Geometry) -> dict[str, Any]:
        return {}

    def parse(self, text: str, fields: Mapping[str, Any], lang: str) -> Any:
        """Strict reading: the structured answer when ``text`` is exactly in the task's format.

        Parameters
        ----------
        text:
            The model's generated answer.
        fields:
            The record's task fields (options, expected box dimension ...).
        lang:
            The record's language: Chinese answers use Chinese punctuation where the target
            does (``1：肺炎``), English ones ASCII.

        Returns
        -------
        Any
            The structured answer, or ``None`` (malformed). Never raises.
        """
        return self._guarded(self._parse, text, fields, lang)

    def parse_lenient(self, text: str, fields: Mapping[str, Any], lang: str) -> Any:
        """Lenient reading: the strict answer, else what a lenient reader finds (or ``None``).

        Accepts either language's punctuation, lead-ins, options by text and coordinates in
        other notations; never raises.
        """
        return self.read(text, fields, lang).lenient

    def read(self, text: str, fields: Mapping[str, Any], lang: str) -> Reading:
        """Both readings of one generated answer."""
        strict = self.parse(text, fields, lang)
        if strict is not None:
            return Reading(strict, strict)
        return Reading(None, self._guarded(self._parse_lenient, text, fields))

    def score(
        self, readings: Sequence[Reading], references: Sequence[Any], lang: str
    ) -> dict[str, float]:
        """Scores of one (task, language) group.

        Every dict has ``count``, ``misses`` and (when not empty) ``well_formed`` (see
        :mod:`shared_model.tasks.scoring`); each metric is scored on strict readings under its
        own name and, for those marked lenient, on lenient readings as ``<name>_lenient``. A
        metric whose group is empty (closed VQA among open questions) is left out.
        """
        check_lang(lang)
        result = group_counts(readings, references)
        result.update(self._scores([r.strict for r in readings], references, lang))
        twins = [m.name for m in self.metrics if m.lenient]
        if twins:
            lenient = self._scores([r.lenient for r in readings], references, lang)
            found = [name for name in twins if name in lenient]
            result.update({name + LENIENT_SUFFIX: lenient[name] for name in found})
        return result

    @classmethod
    def scored_metrics(cls) -> tuple[Metric, ...]:
        """Every score the task reports, in table order: the headline and its lenient twin,
        ``well_formed``, then the others (each followed by its twin)."""
        ordered = sorted(cls.metrics, key=lambda metric: metric.name != cls.headline)
        found = [twin for metric in ordered for twin in _with_twin(metric)]
        lead = 2 if ordered[0].lenient else 1
        return (*found[:lead], WELL_FORMED_METRIC, *found[lead:])

    @classmethod
    def metric(cls, name: str) -> Metric:
        """The description of score ``name``; ``KeyError`` naming the task's scores."""
        for metric in cls.scored_metrics():
            if metric.name == name:
                return metric
        known = ", ".join(m.name for m in cls.scored_metrics())
        raise KeyError(f"task {cls.name} has no score {name!r}; its scores are {known}")

    @staticmethod
    def _guarded(parse: Callable[..., Any], *args: Any) -> Any:
        """``parse(text, ...)``, or ``None`` when the text is not a string or cannot be read."""
        if not isinstance(args[0], str):
            return None
        try:
            return parse(*args)
        except _PARSE_ERRORS:
            return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, stage={self.stage!r})"


def _with_twin(metric: Metric) -> tuple[Metric, ...]:
    return (metric, metric.lenient_twin()) if metric.lenient else (metric,)
