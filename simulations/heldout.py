"""Score models on the sites' held-out test splits, and ask them a few questions in both languages.

Sites train on ``train`` and the federated evaluation reads ``val``; the ``test`` split is read
only here, after training, to report how the base and the exported model compare. Models are
loaded from their directories with plain transformers, as any user of the export would.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from client.archive import load_site_samples
from client.config import load_site_config
from shared_model.evaluation import answer_samples
from shared_model.inference import Answer, load_answerer
from shared_model.option_scores import option_log_likelihoods
from shared_model.sample import Sample
from shared_model.spec import ModelSpec
from shared_model.tasks import STAGE_TASKS, Reading, get_task

PREFERRED = ("vqa", "classification", "detection", "landmark", "report")


def pooled_samples(site_configs: Sequence[Path], spec: ModelSpec, split: str) -> list[Sample]:
    """Every usable ``split`` sample of the ``instruct`` tasks of every site, pooled."""
    samples = []
    for path in site_configs:
        loaded, _ = load_site_samples(
            load_site_config(path),
            canvas=spec.canvas,
            slices=spec.volume_slices,
            splits=(split,),
            tasks=STAGE_TASKS["instruct"],
        )
        samples.extend(loaded)
    return samples


def held_out_samples(
    site_configs: Sequence[Path], spec: ModelSpec, per_group: int | None = None, split: str = "test"
) -> list[Sample]:
    """Every usable ``split`` sample (the test split unless told) of the ``instruct`` tasks of
    every site, pooled; with ``per_group``, at most that many of each task and language, spread
    evenly over the sites' records (answering thousands of records would take longer than
    training)."""
    samples = pooled_samples(site_configs, spec, split)
    if per_group is None:
        return samples
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for position, sample in enumerate(samples):
        groups[(sample.task, sample.lang)].append(position)
    kept = set()
    for positions in groups.values():
        stride = max(1.0, len(positions) / per_group)
        kept.update(positions[int(i * stride)] for i in range(min(per_group, len(positions))))
    return [sample for position, sample in enumerate(samples) if position in kept]


class ModelAnswers(NamedTuple):
    """What one model did on the test records: its answers, each closed record's option
    log-likelihoods, ``None`` for the others (:func:`shared_model.option_scores.option_auc`),
    and its answers to the records' language twins it was asked
    (:mod:`simulations.language_twins`)."""

    answers: list[Answer]
    likelihoods: list[list[float] | None]
    twin_answers: Sequence[Answer] = ()

    @property
    def readings(self) -> list[Reading]:
        """The answers' readings (score them with
        :func:`shared_model.evaluation.score_predictions`)."""
        return [answer.reading for answer in self.answers]


def answer_and_rank(
    directory: Path, samples: Sequence[Sample], spec: ModelSpec, twins: Sequence[Sample] = ()
) -> ModelAnswers:
    """Load the model in ``directory`` once, answer ``samples`` and score their options; answer
    ``twins`` too."""
    answerer = load_answerer(directory, spec.canvas)
    return ModelAnswers(
        answer_samples(answerer, samples, progress=True),
        option_log_likelihoods(answerer.model, answerer.processor, spec, samples),
        answer_samples(answerer, twins, progress=True) if twins else [],
    )


def pick_questions(samples: Sequence[Sample], per_language: int = 3) -> list[int]:
    """The positions of a few samples per language, one task after another in
    :data:`PREFERRED` order."""
    chosen: list[int] = []
    for lang in ("en", "zh"):
        pool = [i for i, s in enumerate(samples) if s.lang == lang]
        for task in PREFERRED:
            chosen += [i for i in pool if samples[i].task == task][:1]
            if sum(samples[i].lang == lang for i in chosen) >= per_language:
                break
    return chosen


def answer_heldout(
    samples: Sequence[Sample], model: ModelAnswers, per_language: int = 3
) -> list[dict[str, Any]]:
    """Question, expected answer and the model's answer for a few of the held-out test
    samples it answered."""
    pairs = [(samples[i], model.answers[i]) for i in pick_questions(samples, per_language)]
    return [
        {
            "lang": s.lang,
            "task": s.task,
            "question": get_task(s.task).prompt(s.fields, s.lang).splitlines()[0],
            "expected": get_task(s.task).target(s.fields, s.lang),
            "answer": a.text,
            "well_formed": a.reading.well_formed,
            "correct": a.reading.strict == get_task(s.task).reference(s.fields),
        }
        for s, a in pairs
    ]
