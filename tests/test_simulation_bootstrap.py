"""The paired bootstrap behind the compare and simulate tables: its intervals are exact where the
answer is certain, hold the observed difference, narrow as the test set grows, and are read the
right way round for lower-is-better metrics; the compare table and its five-point verdict."""

from __future__ import annotations

import numpy as np
import pytest

from shared_model.evaluation import score_predictions
from shared_model.sample import Geometry, Sample
from shared_model.tasks import Reading
from simulations.bootstrap import paired_intervals
from simulations.compare import (
    ARMS,
    CENTRALIZED,
    FEDERATED,
    FEDERATED_DP,
    LOCAL,
    against_target,
    comparison_rows,
    draw_comparison,
    plotted_rows,
)
from simulations.report import add_intervals, established

OPTIONS = ["normal", "pneumonia"]
KEY = "classification/en/accuracy"


def samples(count: int, lang: str = "en") -> list[Sample]:
    image = np.zeros((28, 28, 1), dtype=np.uint8)
    fields = {"question": "Finding?", "options": OPTIONS}
    return [
        Sample(
            record_id=f"{lang}-{i}",
            patient_id=f"P{i}",
            task="classification",
            lang=lang,
            split="test",
            images=(image,),
            geometries=(Geometry(28, 28, 28),),
            fields={**fields, "label": i % 2},
        )
        for i in range(count)
    ]


def labels(records: list[Sample]) -> list[Reading]:
    """Right, well-formed answers to every record."""
    return read([s.fields["label"] for s in records])


def read(answers: list[int]) -> list[Reading]:
    """Well-formed answers naming these classes."""
    return [Reading(answer, answer) for answer in answers]


def flip(readings: list[Reading]) -> list[Reading]:
    """The other class of two, for every answer."""
    return read([1 - r.strict for r in readings])


def test_identical_models_differ_by_exactly_nothing() -> None:
    records = samples(30)
    answers = read([0] * 30)
    intervals = paired_intervals(records, [answers], [answers], resamples=50)
    assert intervals[KEY] == (0.0, 0.0)


def test_always_right_against_always_wrong_is_certain() -> None:
    records = samples(30)
    right = labels(records)
    wrong = flip(right)
    assert paired_intervals(records, [wrong], [right], resamples=50)[KEY] == (1.0, 1.0)


def test_interval_holds_the_difference_and_narrows_with_more_records() -> None:
    widths = []
    for copies in (1, 10):
        records = samples(30 * copies)
        right, wrong = labels(records), flip(labels(records))
        before = [right[i] if i % 30 < 15 else wrong[i] for i in range(len(records))]
        after = [right[i] if i % 30 < 18 else wrong[i] for i in range(len(records))]
        # three more right in every thirty
        observed = score_predictions(records, after)[KEY] - score_predictions(records, before)[KEY]
        low, high = paired_intervals(records, [before], [after], resamples=300)[KEY]
        assert observed == pytest.approx(0.1) and low <= observed <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2
    assert low > 0  # with 300 records, ten points better is established


def test_draws_stay_within_task_and_language() -> None:
    english, chinese = samples(20, "en"), samples(20, "zh")
    records = english + chinese
    before = labels(english) + flip(labels(chinese))
    after = labels(records)  # the same in English, all fixed in Chinese
    intervals = paired_intervals(records, [before], [after], resamples=50)
    assert intervals[KEY] == (0.0, 0.0)
    assert intervals["classification/zh/accuracy"] == (1.0, 1.0)


def test_resampled_scoring_repeats_records() -> None:
    records = samples(4)
    answers = read([0, 0, 0, 0])  # right on records 0 and 2
    assert score_predictions(records, answers, [0, 0, 2, 1])[KEY] == 0.75


def test_one_answer_per_record_is_required() -> None:
    with pytest.raises(ValueError, match="one prediction per sample"):
        paired_intervals(samples(3), [read([0, 0, 0])], [read([0, 0])])
    with pytest.raises(ValueError, match="at least one run"):
        paired_intervals(samples(3), [], [read([0, 0, 0])])


def test_several_runs_count_as_their_mean() -> None:
    records = samples(30)
    right = labels(records)
    wrong = flip(right)
    intervals = paired_intervals(records, [right], [right, wrong], resamples=50)
    assert intervals[KEY] == (-0.5, -0.5)


def test_lower_is_better_intervals_read_the_other_way() -> None:
    rows = [
        {"task": "landmark", "lang": "en", "metric": "mre"},
        {"task": "landmark", "lang": "en", "metric": "sdr"},
        {"task": "vqa", "lang": "en", "metric": "closed_accuracy"},
    ]
    intervals = {
        "landmark/en/mre": (-40.0, -5.0),  # radial error fell: better
        "landmark/en/sdr": (-0.2, -0.1),  # detection rate fell: worse
        "vqa/en/closed_accuracy": (-0.1, 0.2),
    }
    verdicts = [established(row) for row in add_intervals(rows, intervals)]
    assert verdicts == [1, -1, 0]


def test_compare_table_has_every_arm_and_the_federated_interval() -> None:
    records = samples(40)
    right = labels(records)
    wrong = flip(right)
    half = right[:20] + wrong[20:]
    predictions = {CENTRALIZED: [right], FEDERATED: [half], FEDERATED_DP: [wrong, right]}
    rows = comparison_rows(records, predictions, local=[wrong, right])
    accuracy = next(r for r in rows if r["metric"] == "accuracy")
    assert accuracy["headline"] and not any(r["headline"] for r in rows if r is not accuracy)
    assert [accuracy[arm] for arm in ARMS] == [1.0, 0.5, 0.5, 0.5]
    low, high = accuracy["interval"]
    assert low <= -0.5 <= high < 0
    target = against_target(rows)
    assert target["rows"] == 1  # the headline: accuracy
    assert target["point_estimate"] == target["whole_interval"] == 0
    rows = comparison_rows(records, {**predictions, FEDERATED: [right]}, local=[right])
    assert against_target(rows)["whole_interval"] == 1


def test_compare_table_shows_each_arms_option_auc_with_the_federated_interval() -> None:
    records = samples(40)
    right = labels(records)
    ranked = [[-1.0, -2.0] if s.fields["label"] == 0 else [-2.0, -1.0] for s in records]
    reversed_ = [list(reversed(scores)) for scores in ranked]
    flat = [[-1.0, -1.0] for _ in records]
    predictions = {CENTRALIZED: [right], FEDERATED: [right], FEDERATED_DP: [right]}
    rankings = {
        CENTRALIZED: [ranked],
        FEDERATED: [reversed_],
        FEDERATED_DP: [flat, ranked],
        LOCAL: [flat],
    }
    rows = comparison_rows(records, predictions, local=[right], rankings=rankings)
    auc = next(r for r in rows if r["metric"] == "option_auc")
    assert [auc[arm] for arm in ARMS] == [1.0, 0.5, 0.0, 0.75]
    assert not auc["headline"] and established(auc) == -1
    assert "option_auc" not in {r["metric"] for r in comparison_rows(records, predictions, [right])}


def test_compare_plot_shows_whether_the_images_were_read_beside_each_headline(tmp_path) -> None:
    records = samples(40)
    right = labels(records)
    majority = read([0] * len(records))
    ranked = [[-1.0, -2.0] if s.fields["label"] == 0 else [-2.0, -1.0] for s in records]
    predictions = {CENTRALIZED: [right], FEDERATED: [majority], FEDERATED_DP: [majority]}
    rankings = {arm: [ranked] for arm in (*predictions, LOCAL)}
    rows = comparison_rows(records, predictions, local=[right], rankings=rankings)
    plotted = plotted_rows(rows)
    assert [r["metric"] for r in plotted] == ["accuracy", "balanced_accuracy", "option_auc"]
    balanced = plotted[1]
    assert balanced[CENTRALIZED] == 1.0 and balanced[FEDERATED] == 0.5
    assert draw_comparison(plotted, tmp_path / "compare.png").stat().st_size > 0
