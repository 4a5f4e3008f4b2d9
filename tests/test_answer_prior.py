"""Balanced answers: the counts' release (sensitivity, noise, ledger), the weights, the store,
and a real site's rounds that release once a run and stay within the budget."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from client.config import SiteConfigError, load_site_config
from client.privacy import PrivacyLedger, SiteRandomness
from client.privacy.answer_prior import (
    CLOSED_TASKS,
    COUNT_ROWS,
    OPTION_CELLS,
    QUESTION_ROWS,
    RELEASE_STAGE,
    AnswerCounts,
    AnswerCountsStore,
    answer_class,
    count_release,
    count_row,
    release_answer_counts,
)
from client.privacy.per_unit import clip_and_sum
from client.trainer import TrainConfig
from server.coordinator import initial_arrays
from shared_model.evaluation import evaluate_samples
from shared_model.inference import Answerer
from shared_model.sample import Geometry, Sample
from shared_model.tasks import get_task
from simulations.synthetic import generate_consortium
from tests.conftest import lesion_image, side_records
from tests.test_dp_exact import instruct_trainer
from tests.test_site_privacy import small_site, train_config

EXACT = SiteRandomness.replayable(0, "unused")


def record(task: str, patient: str, **fields) -> Sample:
    """A sample of ``task`` with ``fields`` (no image: nothing here reads one)."""
    return Sample(
        f"{patient}-{task}-{len(fields)}-{sorted(fields.items())!r}",
        patient,
        task,
        "en",
        "train",
        (np.zeros((8, 8, 1), dtype=np.uint8),),
        (Geometry(8, 8, 1),),
        fields,
    )


def classified(patient: str, label: int) -> Sample:
    return record(
        "classification", patient, question="Finding?", options=["normal", "mass"], label=label
    )


def closed(patient: str, answer: str) -> Sample:
    return record("vqa", patient, question="Lesion?", options=["yes", "no"], answer=answer)


def side(patient: str, answer: str) -> Sample:
    return record("vqa", patient, question="Side?", options=["left", "right"], answer=answer)


FINDING_ROW = count_row("classification", ["0:normal", "1:mass"])
LESION_ROW = count_row("vqa", ["1:yes", "2:no"])


def test_only_closed_questions_have_an_answer_class_in_their_questions_row() -> None:
    assert answer_class(classified("p", 1)) == (FINDING_ROW, 1, 2)
    assert answer_class(closed("p", "no")) == (LESION_ROW, 1, 2)
    assert answer_class(side("p", "left"))[:2] == (count_row("vqa", ["1:left", "2:right"]), 0)
    assert answer_class(side("p", "left"))[0] != LESION_ROW
    assert FINDING_ROW.startswith("classification/") and LESION_ROW.startswith("vqa/")
    assert len(set(COUNT_ROWS)) == len(CLOSED_TASKS) * QUESTION_ROWS
    assert {FINDING_ROW, LESION_ROW} < set(COUNT_ROWS)
    assert answer_class(record("vqa", "p", question="What organ?", answer="liver")) is None
    assert answer_class(record("report", "p", report="No finding.")) is None
    assert set(CLOSED_TASKS) == {"classification", "vqa"}


def test_a_units_contribution_has_norm_at_most_one() -> None:
    """Removing any one patient moves the exact counts by at most 1 in L2 norm (the Gaussian
    mechanism's sensitivity): exactly 1 for a patient who gives each closed task one answer,
    however many records it has, less for one whose answers differ."""
    samples = [
        classified("a", 1),
        classified("a", 1),
        closed("a", "no"),
        closed("a", "no"),
        closed("a", "no"),
        classified("b", 0),
        classified("b", 1),
        closed("b", "yes"),
        closed("b", "no"),
        classified("c", 1),
        closed("d", "yes"),
        record("report", "d", report="Clear."),
    ]
    units = [s.patient_id for s in samples]

    def exact(keep: set[str]) -> np.ndarray:
        kept = [(s, u) for s, u in zip(samples, units, strict=True) if u in keep]
        counts = release_answer_counts([s for s, _ in kept], [u for _, u in kept], 0.0, EXACT)
        return np.concatenate([counts.counts.get(row, [0.0] * OPTION_CELLS) for row in COUNT_ROWS])

    everyone = exact(set(units))
    moved = {unit: np.linalg.norm(everyone - exact(set(units) - {unit})) for unit in "abcd"}
    assert moved["a"] == pytest.approx(1.0)
    assert moved["b"] == pytest.approx(math.sqrt(0.5)) and moved["c"] == pytest.approx(
        math.sqrt(0.5)
    )
    assert all(0 < distance <= 1.0 + 1e-12 for distance in moved.values())


def test_the_release_adds_noise_of_the_policys_scale_and_keeps_the_rows_in_use() -> None:
    samples = [classified(f"p{i}", i % 2) for i in range(40)]
    units = [s.patient_id for s in samples]
    exact = release_answer_counts(samples, units, 0.0, EXACT)
    assert set(exact.counts) == {FINDING_ROW}
    offsets = []
    for seed in range(400):
        noisy = release_answer_counts(samples, units, 5.0, SiteRandomness.replayable(seed, "c"))
        assert set(noisy.counts) == {FINDING_ROW}
        offsets.append(np.subtract(noisy.counts[FINDING_ROW], exact.counts[FINDING_ROW]))
    assert np.std(offsets) == pytest.approx(5.0, rel=0.1)
    assert abs(np.mean(offsets)) < 0.5
    assert count_release(5.0) == (5.0, 1.0, 1)


def test_weights_balance_a_questions_own_options_with_rare_counts_floored() -> None:
    """``p_min / p_y`` over the record's own options, a count under three noise deviations read
    as that floor: a site holding almost only one class adds little of it."""
    scale = 1 / math.sqrt(len(CLOSED_TASKS))
    three = ["normal", "mass", "cyst"]
    counts = AnswerCounts(
        {
            FINDING_ROW: [90 * scale, 10 * scale, 2.0] + [0.0] * (OPTION_CELLS - 3),
            count_row("classification", ["0:normal", "1:mass", "2:cyst"]): (
                [90 * scale, 10 * scale, 2.0] + [0.0] * (OPTION_CELLS - 3)
            ),
            LESION_ROW: [0.0] * OPTION_CELLS,
        },
        noise_std=1.0,
    )
    majority, minority = classified("p", 0), classified("p", 1)
    assert counts.weight(majority) == pytest.approx(10 / 90)  # two options: cyst not asked
    assert counts.weight(minority) == 1.0
    of_three = [
        counts.weight(record("classification", "p", question="?", options=three, label=label))
        for label in range(3)
    ]
    assert of_three == pytest.approx([3.0 / (90 * scale), 3.0 / (10 * scale), 1.0])
    assert counts.weight(closed("p", "yes")) == 1.0  # no vqa answers here: every class floored
    assert counts.weight(record("report", "p", report="x")) == 1.0
    single = AnswerCounts({FINDING_ROW: [8 * scale, 760 * scale] + [0.0] * 14}, 5.0)
    assert single.weight(classified("p", 0)) == 1.0
    assert single.weight(classified("p", 1)) == pytest.approx(15.0 / (760 * scale))
    assert AnswerCounts.from_json(counts.to_json()) == counts


def test_each_question_is_balanced_over_its_own_answers() -> None:
    """A site whose lesion question is mostly ``yes`` and whose side question is even: the
    side question's answers weigh the same (each 1), the lesion question's ``yes`` less. Counted
    by option index alone, ``left`` (the first option, like ``yes``) weighed 0.6."""
    samples = [closed(f"p{i}", "yes" if i % 4 else "no") for i in range(80)]
    samples += [side(f"p{i}", "left" if i % 2 else "right") for i in range(80)]
    counts = release_answer_counts(samples, [s.patient_id for s in samples], 0.0, EXACT)
    assert counts.weight(side("q", "left")) == pytest.approx(1.0)
    assert counts.weight(side("q", "right")) == pytest.approx(1.0)
    assert counts.weight(closed("q", "yes")) == pytest.approx(1 / 3)
    assert counts.weight(closed("q", "no")) == pytest.approx(1.0)


def test_the_synthetic_hospitals_questions_each_count_in_a_row_of_their_own(tmp_path) -> None:
    """Rows are picked by hash: the main job's questions (two languages) must not share one."""
    option_sets = defaultdict(set)
    for archive in generate_consortium(tmp_path, n_sites=3, patients=30, seed=0):
        for line in (archive / "manifest.jsonl").read_text().splitlines():
            entry = json.loads(line)
            if entry["task"] in CLOSED_TASKS and entry.get("options"):
                options = get_task(entry["task"]).option_targets(entry, entry["lang"])
                option_sets[count_row(entry["task"], options)].add(tuple(options))
    assert len(option_sets) >= 6  # classification and two questions, in both languages
    assert all(len(sets) == 1 for sets in option_sets.values())


def test_the_store_keeps_counts_by_run_and_never_uses_the_run_id_as_a_path(
    tmp_path: Path,
) -> None:
    store = AnswerCountsStore(tmp_path / "answer_counts")
    counts = AnswerCounts({FINDING_ROW: [1.0] * OPTION_CELLS}, 5.0)
    assert store.get("../../escape") is None
    path = store.put("../../escape", counts)
    assert path.parent == tmp_path / "answer_counts" and ".." not in path.name
    assert store.get("../../escape") == counts
    assert store.get("another-run") is None


def test_weighted_clipping_refuses_a_weight_above_one() -> None:
    parameter = torch.nn.Parameter(torch.zeros(3))
    grads = {parameter: torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.3, 0.4]])}
    summed, norms = clip_and_sum(grads, 1.0, weights=torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(summed[parameter], torch.tensor([0.3, 0.7, 0.4]))
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    with pytest.raises(ValueError, match="weights"):
        clip_and_sum(grads, 1.0, weights=torch.tensor([1.5, 1.0]))


@pytest.fixture
def balanced_site(tmp_path: Path, tiny_base: Path) -> Path:
    return small_site(tmp_path, tiny_base, patients=8, balance_answers=True)


def test_a_balanced_site_releases_its_counts_once_a_run_within_its_budget(
    balanced_site: Path,
) -> None:
    from client.rounds import train_round
    from client.site import Site

    config = load_site_config(balanced_site)
    site = Site(config, progress=False)
    arrays = initial_arrays(site.spec, "instruct", 0, None)
    train_round(site, arrays, train_config(site.fingerprint, 1))
    train_round(site, arrays, train_config(site.fingerprint, 2))

    ledger = PrivacyLedger(config.ledger_path)
    stages = [(entry.stage, entry.settled) for entry in ledger.entries()]
    assert stages == [(RELEASE_STAGE, True), ("instruct", True), ("instruct", True)]
    release = ledger.entries()[0]
    assert release.mechanism == count_release(config.policy.answer_count_noise)
    assert ledger.epsilon(delta=config.policy.delta) <= config.policy.max_epsilon
    counts = site.answer_counts.get("test-run")
    assert counts is not None and counts.noise_std == config.policy.answer_count_noise
    samples = site.samples("train", "instruct")
    exact = release_answer_counts(samples, site.unit_keys(samples), 0.0, EXACT)
    assert any(row.startswith("classification/") for row in exact.counts)
    assert set(counts.counts) == set(exact.counts)
    offsets = np.concatenate([np.subtract(counts.counts[r], exact.counts[r]) for r in exact.counts])
    assert 2.5 < np.std(offsets) < 8.0  # the site's own noise on its own answers


def test_the_counts_noise_must_be_positive(tmp_path: Path, balanced_site: Path) -> None:
    text = balanced_site.read_text().replace(
        "balance_answers = true", "balance_answers = true\nanswer_count_noise = 0"
    )
    broken = tmp_path / "broken.toml"
    broken.write_text(text)
    with pytest.raises(SiteConfigError, match="answer_count_noise"):
        load_site_config(broken)


def sided(sides: str, first: int) -> list[Sample]:
    """Classification records ``r{first}``, ``r{first + 1}``, ... whose lesion is on the side
    each letter of ``sides`` names (``l`` or ``r``)."""
    records = side_records(tuple("left" if s == "l" else "right" for s in sides))
    return [
        replace(
            r,
            record_id=f"r{first + n}",
            patient_id=f"p{first + n}",
            images=(lesion_image(r.fields["label"], seed=first + n),),
        )
        for n, r in enumerate(records)
    ]


def clipped_training(spec, train: list[Sample], balanced: bool) -> dict[str, float]:
    """Held-out scores after 20 clipped, noise-free steps over every ``train`` record."""
    torch.manual_seed(0)
    trainer = instruct_trainer(spec)
    units = [s.patient_id for s in train]
    weights = release_answer_counts(train, units, 0.0, EXACT).weights(train) if balanced else None
    config = TrainConfig(
        steps=20, sample_rate=1.0, learning_rate=1e-2, noise_multiplier=0.0, max_grad_norm=0.1
    )
    trainer.train(train, units, config, record_weights=weights, progress=False)
    answerer = Answerer(trainer.adapter.model, trainer.processor, spec.canvas)
    return evaluate_samples(answerer, sided("lr" * 8, 100))


def test_clipped_steps_answer_the_minority_only_when_balanced(tiny_spec) -> None:
    """Clipping makes every patient push their answer equally hard, so 38 ``left`` lesions
    against 2 ``right`` ones teach the majority's answer: the right lesions are not answered
    right. Balanced, every held-out lesion is answered right and well-formed."""
    train = sided("l" * 38 + "r" * 2, 0)
    plain = clipped_training(tiny_spec, train, balanced=False)
    balanced = clipped_training(tiny_spec, train, balanced=True)
    assert plain["classification/en/balanced_accuracy"] <= 0.5
    assert balanced["classification/en/balanced_accuracy"] == 1.0
    assert balanced["classification/en/well_formed"] == 1.0
