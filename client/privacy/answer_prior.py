"""Balanced answers: each closed question's answers weigh the same in a site's DP-SGD steps.

DP-SGD clips every unit's gradient to the same norm, and once a unit is clipped only its
direction counts: every sampled unit pushes its own answer with the same force, whatever the
model already believes. A closed question's answer then follows the counts of its answers far
more than a likelihood would. Measured on PneumoniaMNIST (trained on its training split, 10 %
normal images, pooled, 288 patients a step at learning rate 1e-2; margins on 200 validation
images): with the loss adjusted by the training
prior (logit adjustment, Menon et al. 2021, arXiv 2007.07314, which makes an *unclipped*
likelihood balanced, and did: the margin stayed near 0 without clipping), 20 clipped,
noise-free steps drove the margin between ``0`` (normal) and ``1`` (pneumonia) at the answer's
first token to -4.5 on average for both classes, past the training odds (-2.2), so every answer
was the majority class. Weighting each unit's *clipped* gradient by ``w = p_min / p_y`` instead,
where ``p_y`` is the share of its answer among the site's answers to that task, makes every
answer class weigh the same (the balanced objective): the same 20 steps separated the classes
(margin +3.5 normal, -2.5 pneumonia on average). A weight is at most 1, so a unit's weighted
contribution stays within the clipping norm and the noise is unchanged.

The shares are the site's data, so they are released under DP before they are used
(:func:`release_answer_counts`): every unit adds one vector of L2 norm at most 1 (per closed
task, the mean of its records' one-hot answers, scaled by ``1 / sqrt(tasks)``), and Gaussian
noise of standard deviation ``noise_std`` is added to every count: a Gaussian mechanism of noise
multiplier ``noise_std``, which the site's ledger records as one full-batch step
(:func:`count_release`). The counts never leave the site. Cells are a fixed grid (for each
closed task of the ``instruct`` stage, :data:`QUESTION_ROWS` rows of option indices, a question
taking the row its listed options hash to) so that which cells exist reveals nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.privacy.accounting import Mechanism
from client.privacy.randomness import SiteRandomness
from shared_model.sample import Sample
from shared_model.tasks import STAGE_TASKS, get_task

OPTION_CELLS = 16
"""Answer counts kept per closed task: options ``0 .. 15`` (an answer beyond weighs 1)."""
FLOOR_DEVIATIONS = 3.0
"""A count below this many noise deviations (and below one patient) is read as that floor: a
class too rare to count well, or missing at the site, still sets how much the common classes
weigh, so a site that holds almost one class adds little of it (measured: under a Dirichlet
split one hospital held 8 normal images against 1,075 with pneumonia, and with its rare class
left out of the balance it pushed every answer to ``pneumonia``)."""
RELEASE_STAGE = "answer-counts"
"""The ledger's stage name for a count release."""
CLOSED_TASKS = tuple(name for name in STAGE_TASKS["instruct"] if get_task(name).discrete)
"""The tasks whose answers are counted: the discrete (option) tasks of the ``instruct`` stage."""
QUESTION_ROWS = 1024
"""Rows of counts per closed task. Each question is balanced over its own answers: its row is
picked by a hash of its listed options (their texts, in its language). Counted by option index
alone, a task's questions shared one row, and a side question's ``2:right`` weighed as much
as the rarer ``2:no`` of the lesion question beside it: over the synthetic hospitals the
``left`` answers weighed about half as much as ``right``, and the federation answered ``right``
to 65 of the 80 Chinese side questions of the test split, 33 of which are on the right.
Two questions share a row by chance only, one in 1,024 a pair (at 64 rows the synthetic
hospitals' English and Chinese classification questions did)."""
COUNT_ROWS = tuple(f"{task}/{row}" for task in CLOSED_TASKS for row in range(QUESTION_ROWS))
"""Every row of counts, in a fixed order: a task and a question's row."""
_ROW_POSITION = {row: position for position, row in enumerate(COUNT_ROWS)}


def count_row(task: str, options: Sequence[str]) -> str:
    """The row of :data:`COUNT_ROWS` that counts the answers of ``task``'s question listing
    ``options``."""
    key = json.dumps([task, list(options)], ensure_ascii=False).encode()
    row = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % QUESTION_ROWS
    return f"{task}/{row}"


def answer_class(sample: Sample) -> tuple[str, int, int] | None:
    """``(count row, option index, options listed)`` of a closed question's right answer,
    ``None`` for a record without listed options (open questions, boxes, points, reports)."""
    if sample.task not in CLOSED_TASKS:
        return None
    task = get_task(sample.task)
    options = task.option_targets(sample.fields, sample.lang)
    if options is None:
        return None
    return count_row(sample.task, options), int(task.reference(sample.fields)), len(options)


def count_release(noise_std: float) -> Mechanism:
    """The ledger's view of one count release: a Gaussian mechanism of sensitivity 1 run once
    on the whole archive (sample rate 1)."""
    return Mechanism(float(noise_std), 1.0, 1)


@dataclass(frozen=True)
class AnswerCounts:
    """Noisy answer counts per row of :data:`COUNT_ROWS` (``OPTION_CELLS`` each, in units of
    ``1 / sqrt(len(CLOSED_TASKS))`` a patient) and the noise's standard deviation."""

    counts: dict[str, list[float]]
    noise_std: float

    def weight(self, sample: Sample) -> float:
        """The sample's weight: ``p_min / p_y`` among its own question's options, each count
        floored (:data:`FLOOR_DEVIATIONS`), for a closed answer; 1 for anything else."""
        found = answer_class(sample)
        if found is None or found[1] >= OPTION_CELLS:
            return 1.0
        row, option, listed = found
        counts = np.asarray(self.counts.get(row, [0.0] * OPTION_CELLS), dtype=float)
        floored = np.maximum(counts[: min(listed, OPTION_CELLS)], self.floor)
        return float(floored.min() / floored[option])

    def weights(self, samples: Sequence[Sample]) -> list[float]:
        """:meth:`weight` of every sample."""
        return [self.weight(sample) for sample in samples]

    @property
    def floor(self) -> float:
        """The smallest count a class is read as: three noise deviations or one patient."""
        return max(FLOOR_DEVIATIONS * self.noise_std, 1.0 / math.sqrt(len(CLOSED_TASKS)))

    def to_json(self) -> dict:
        """A JSON-ready record (the site keeps it beside its ledger)."""
        return {"counts": self.counts, "noise_std": self.noise_std}

    @classmethod
    def from_json(cls, data: dict) -> AnswerCounts:
        """Read back :meth:`to_json`."""
        counts = {str(task): [float(v) for v in values] for task, values in data["counts"].items()}
        return cls(counts, float(data["noise_std"]))


def release_answer_counts(
    samples: Sequence[Sample],
    unit_keys: Sequence[str],
    noise_std: float,
    randomness: SiteRandomness,
) -> AnswerCounts:
    """Every closed task's answer counts over ``samples``, one vector of norm at most 1 per
    unit (``unit_keys``), plus Gaussian noise of ``noise_std`` on every cell of the grid (0: the
    exact counts, for a site that trains without DP). The rows no sample's question takes are
    drawn and dropped: only the kept rows weigh a record."""
    if noise_std < 0:
        raise ValueError(f"the counts' noise must be at least 0, got {noise_std}")
    answers: dict[str, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for sample, unit in zip(samples, unit_keys, strict=True):
        found = answer_class(sample)
        if found is not None and found[1] < OPTION_CELLS:
            row, option, _ = found
            answers[unit][sample.task].append((_ROW_POSITION[row], option))
    summed = np.zeros((len(COUNT_ROWS), OPTION_CELLS))
    scale = 1.0 / math.sqrt(len(CLOSED_TASKS))
    for by_task in answers.values():
        for cells in by_task.values():
            rows, options = zip(*cells, strict=True)
            np.add.at(summed, (list(rows), list(options)), scale / len(cells))
    if noise_std > 0:
        summed += randomness.gaussian(summed.shape, noise_std).double().numpy()
    used = sorted(
        {row for by_task in answers.values() for cells in by_task.values() for row, _ in cells}
    )
    return AnswerCounts({COUNT_ROWS[i]: summed[i].tolist() for i in used}, noise_std)


class AnswerCountsStore:
    """Released counts in a site's work folder, one JSON file a run (named by the run id's
    SHA-256, so a server's run id never becomes a path); written by a rename."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, run_id: str) -> Path:
        """The file of ``run_id``'s counts."""
        return self.directory / f"{hashlib.sha256(run_id.encode()).hexdigest()[:32]}.json"

    def get(self, run_id: str) -> AnswerCounts | None:
        """The counts released for ``run_id``, or ``None``."""
        path = self.path(run_id)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        if data.get("run_id") != run_id:
            raise ValueError(f"{path}: holds the counts of run {data.get('run_id')!r}")
        return AnswerCounts.from_json(data)

    def put(self, run_id: str, counts: AnswerCounts) -> Path:
        """Keep ``counts`` as ``run_id``'s."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(run_id)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps({"run_id": run_id, **counts.to_json()}, indent=1))
        partial.replace(path)
        return path
