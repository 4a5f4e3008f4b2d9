"""The verdict under a simulation's table: what improved, what fell, what beat the majority."""

from __future__ import annotations

import pytest

from simulations.heldout_plot import draw_heldout
from simulations.majority import VS_MAJORITY
from simulations.verdict import judged_rows, verdict, verdict_lines


def row(task, lang, metric, before, after, interval=None, headline=False, **extra):
    found = {"task": task, "lang": lang, "metric": metric, "headline": headline}
    found.update({"round 0": before, "final": after, **extra})
    if interval is not None:
        found["interval"] = list(interval)
    return found


TABLE = [
    row(
        "vqa",
        "en",
        "closed_accuracy",
        0.2,
        0.6,
        (0.1, 0.5),
        True,
        majority=0.5,
        **{VS_MAJORITY: [0.01, 0.2]},
    ),
    row("vqa", "en", "well_formed", 0.7, 1.0, (0.1, 0.4)),
    row("vqa", "zh", "closed_accuracy", 0.1, 0.5, (-0.1, 0.5), True, **{VS_MAJORITY: [-0.2, 0.1]}),
    row("vqa", "zh", "well_formed", 0.7, 0.5, (-0.3, -0.1)),
    row("landmark", "en", "sdr", 0.3, 0.1, (-0.3, -0.1), True),
    row("landmark", "en", "mre", 100.0, 50.0, (-80.0, -20.0)),  # better, but not judged
    row("report", "en", "bleu4", 0.0, 0.0, (0.0, 0.0), True),
    row("report", "en", "bleu1", 0.1, 0.2, (0.05, 0.15)),
    row("caption", "en", "bleu1", 0.1, 0.3, (0.1, 0.3)),  # stage 1: not judged here
]


def test_each_task_is_judged_by_its_headline_and_reports_by_bleu1() -> None:
    judged = {(r["task"], r["lang"]): r["metric"] for r in judged_rows(TABLE)}
    assert judged == {
        ("vqa", "en"): "closed_accuracy",
        ("vqa", "zh"): "closed_accuracy",
        ("landmark", "en"): "sdr",
        ("report", "en"): "bleu1",
    }


def test_the_verdict_reads_the_intervals_the_gaps_and_the_formats() -> None:
    result = verdict(TABLE, "round 0", "final")
    assert result.improved == ["vqa/en", "report/en"]
    assert result.worse == ["landmark/en"]
    assert result.unsettled == ["vqa/zh"]
    assert result.above_majority == ["vqa/en"]
    assert result.improved_to_at_most_majority == []
    assert result.well_formed == pytest.approx(0.75)
    assert result.chinese_gap == {"vqa": pytest.approx(-0.1)}
    text = "\n".join(verdict_lines(result))
    assert "2 of 4 (vqa/en, report/en)" in text and "vqa -0.100" in text


def test_an_improvement_to_the_majority_answer_is_told_apart() -> None:
    table = [row("classification", "en", "accuracy", 0.37, 0.625, (0.2, 0.3), True, majority=0.625)]
    result = verdict(table, "round 0", "final")
    assert result.improved == result.improved_to_at_most_majority == ["classification/en"]
    assert "at or below the majority answer: classification/en" in "\n".join(verdict_lines(result))


def test_a_row_without_an_interval_is_unsettled_and_no_gap_without_both_languages() -> None:
    result = verdict([row("detection", "zh", "map50", 0.0, 0.4, None, True)], "round 0", "final")
    assert (result.improved, result.unsettled) == ([], ["detection/zh"])
    assert result.chinese_gap == {} and result.well_formed is None


def test_the_heldout_plot_draws_the_judged_rows(tmp_path) -> None:
    picture = draw_heldout(TABLE, "round 0", "final", tmp_path / "plots" / "heldout.png")
    assert picture is not None and picture.read_bytes().startswith(b"\x89PNG")
    captions_only = [row("caption", "en", "bleu1", 0.1, 0.3, (0.1, 0.3))]
    assert draw_heldout(captions_only, "round 0", "final", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
