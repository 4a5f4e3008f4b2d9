"""What the language costs, measured on the same images.

Each synthetic patient's records are written in one language, so Chinese minus English over the
test split mixes the language with which images each language happened to get. Here every
synthetic test record is also asked in the other language (its *twin*: the same images and
answer, every text field translated as the synthetic hospitals would have written it), and the
gap is Chinese minus English over the same images, with a bootstrap interval over them.

Twins exist only for records the synthetic hospitals wrote (:mod:`simulations.synthetic`); a
record with any text they never write (a public data set's question, say) has none.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator, Sequence
from functools import cache
from itertools import product
from typing import Any

import numpy as np

from shared_model.evaluation import record_references, score_predictions
from shared_model.sample import LANGUAGES, Sample
from shared_model.tasks import Reading
from simulations.bootstrap import LEVEL, RESAMPLES, central_interval
from simulations.phantoms import LESION_CLASSES, Finding
from simulations.synthetic import ct_records, xray_records

Phrasebook = dict[tuple[str, str], dict[str, str]]
RECORD_KEYS = {"id", "task", "lang", "images", "patient_id", "split", "modality"}
"""A manifest record's keys that are not its task's fields, as ``client.archive.manifest``
splits them (inline there: sharing one constant would change that module's code, which keys
the tiny base's build recipe and so rebuilds the base)."""


@cache
def synthetic_phrasebook() -> Phrasebook:
    """``{(from, to): {text: translation}}`` for every text the synthetic hospitals write:
    their records for every finding, generated in both languages and matched field by field."""
    book: Phrasebook = {(a, b): {} for a in LANGUAGES for b in LANGUAGES if a != b}
    for english, chinese in zip(*(_every_record(lang) for lang in ("en", "zh")), strict=True):
        if english["id"] != chinese["id"]:
            raise AssertionError(f"records out of step: {english['id']} and {chinese['id']}")
        for key in english.keys() - RECORD_KEYS:
            for en_text, zh_text in _texts(english[key], chinese[key]):
                book[("en", "zh")][en_text] = zh_text
                book[("zh", "en")][zh_text] = en_text
    return book


def _every_record(lang: str) -> Iterator[dict[str, Any]]:
    """The synthetic records of one patient with each possible finding, in ``lang``."""
    for lesion, side in product((None, *LESION_CLASSES), ("left", "right")):
        xray = Finding(lesion, side if lesion else None, (0.0,) * 4, (0.0, 0.0))
        volume = Finding(lesion, side if lesion else None, (0.0,) * 6, (0.0, 0.0, 0.0))
        yield from xray_records("P", "cr.dcm", xray, lang, "test", 0)
        yield from ct_records("P", "ct.nii.gz", volume, lang, "test")


def _texts(english: Any, chinese: Any) -> Iterator[tuple[str, str]]:
    if isinstance(english, str):
        yield english, chinese
    elif isinstance(english, list) and all(isinstance(item, str) for item in english):
        yield from zip(english, chinese, strict=True)


def language_twin(sample: Sample) -> Sample | None:
    """``sample`` asked in the other language (same images, translated text fields), or
    ``None`` when one of its texts is not one the synthetic hospitals write."""
    other = next(lang for lang in LANGUAGES if lang != sample.lang)
    words = synthetic_phrasebook()[(sample.lang, other)]
    fields = {}
    for key, value in sample.fields.items():
        if isinstance(value, str):
            if value not in words:
                return None
            value = words[value]
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            if not all(v in words for v in value):
                return None
            value = [words[v] for v in value]
        fields[key] = value
    return dataclasses.replace(sample, lang=other, fields=fields)


@dataclasses.dataclass(frozen=True)
class LanguageGap:
    """Chinese minus English on one task's metric, over the same images."""

    task: str
    metric: str
    english: float
    chinese: float
    interval: tuple[float, float]
    records: int
    """Test records of the task asked in both languages."""

    @property
    def gap(self) -> float:
        """Chinese minus English."""
        return self.chinese - self.english


def language_gaps(
    samples: Sequence[Sample],
    readings: Sequence[Reading],
    twins: Sequence[Sample],
    twin_readings: Sequence[Reading],
    metric_of: dict[str, str],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> list[LanguageGap]:
    """Per task of ``metric_of`` (task -> the metric it is judged by), Chinese minus English
    over the test records asked in both languages, with the central ``level`` interval of a
    bootstrap that draws those records again, with replacement, within each task.

    ``twins[i]`` is ``samples[i]`` in the other language and ``twin_readings[i]`` the model's
    reading of it."""
    if not len(samples) == len(readings) == len(twins) == len(twin_readings):
        raise ValueError("one reading per sample, one twin per sample, one reading per twin")
    both = [*samples, *twins]
    answers = [*readings, *twin_readings]
    references = record_references(both)
    pairs: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        if sample.task in metric_of:
            pairs[sample.task].append(index)
    rng = np.random.default_rng(seed)
    gaps = []
    for task, members in sorted(pairs.items()):
        metric = metric_of[task]

        def scores(drawn: Sequence[int], task: str = task, metric: str = metric) -> tuple:
            indices = [*drawn, *(len(samples) + i for i in drawn)]
            scored = score_predictions(both, answers, indices, references)
            return tuple(scored[f"{task}/{lang}/{metric}"] for lang in ("en", "zh"))

        english, chinese = scores(members)
        draws = [scores(rng.choice(members, len(members))) for _ in range(resamples)]
        interval = central_interval([zh - en for en, zh in draws], level)
        gaps.append(LanguageGap(task, metric, english, chinese, interval, records=len(members)))
    return gaps
