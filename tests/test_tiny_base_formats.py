"""The tiny base answers the hospitals' requests in their formats before any federated round.

A real instruction-tuned base writes a box when asked for a box and a point when asked for a
point, in words it was never tuned on. The tiny base must too (its pretraining varies the
wording of every request, :mod:`shared_model.tiny.phrasings`), or DP-SGD spends its budget
teaching formats. Scored with the tasks' own strict parsers on synthetic hospitals' test records.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from shared_model.inference import Question, load_answerer
from shared_model.tiny import SPEC_FILE, tiny_spec
from simulations import heldout
from simulations.experiment import Consortium
from simulations.synthetic import generate_consortium

FORMAT_TASKS = ("vqa", "detection", "landmark")
"""The tasks whose formats the pretraining's requests cover (a closed question's ``n:option``,
Qwen2-VL's grounding box, a point); classification's options are new words to the base."""


@pytest.fixture(scope="module")
def round_zero(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> dict:
    """Well-formed share of the base's answers per task and language (20 records a group)."""
    out = tmp_path_factory.mktemp("formats")
    archives = generate_consortium(out / "archives", n_sites=2, patients=120, seed=3)
    sites = Consortium(out, tiny_base / SPEC_FILE, archives).site_configs(
        "formats", archives, epsilon=8.0, dp=False, seed=3
    )
    spec = tiny_spec(tiny_base)
    held_out = heldout.held_out_samples(sites, spec, per_group=20)
    samples = [s for s in held_out if s.task in FORMAT_TASKS]
    answers = load_answerer(tiny_base, spec.canvas).answer(
        [Question(s.images, s.task, s.lang, s.fields) for s in samples]
    )
    formed, counted = defaultdict(int), defaultdict(int)
    for sample, answer in zip(samples, answers, strict=True):
        counted[sample.task, sample.lang] += 1
        formed[sample.task, sample.lang] += answer.reading.well_formed
    return {group: formed[group] / counted[group] for group in counted}


def test_every_language_and_format_task_is_answered(round_zero: dict) -> None:
    assert set(round_zero) == {(t, lang) for t in FORMAT_TASKS for lang in ("en", "zh")}


def test_the_base_answers_most_requests_in_their_format(round_zero: dict) -> None:
    """Measured: 0.28 of these answers well-formed with one wording a request (boxes for
    points, shape words for boxes), 0.83 with the varied wordings."""
    mean = sum(round_zero.values()) / len(round_zero)
    assert mean >= 0.6, round_zero
    assert min(round_zero.values()) >= 0.3, round_zero
