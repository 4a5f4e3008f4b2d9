"""``fedumit seeds``: several runs' judged scores side by side, and what holds across them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedumit.cli import main
from simulations.seeds import SummaryError, across_runs, load_runs


def row(task: str, lang: str, metric: str, before: float, after: float, interval) -> dict:
    return {
        "task": task,
        "lang": lang,
        "metric": metric,
        "headline": metric != "bleu1",
        "round 0": before,
        "final": after,
        "interval": list(interval),
    }


def write_run(folder: Path, vqa_interval, landmark_interval, well_formed: float) -> Path:
    """A run folder with a summary as ``fedumit simulate`` writes it (the keys read here)."""
    folder.mkdir(parents=True)
    table = [
        row("vqa", "en", "closed_accuracy", 0.6, 0.7, vqa_interval),
        row("vqa", "en", "well_formed", 1.0, 1.0, (0.0, 0.0)),
        row("landmark", "zh", "sdr", 0.1, 0.05, landmark_interval),
        row("landmark", "zh", "mre", 80.0, 60.0, (-30.0, -10.0)),  # not judged
        row("report", "en", "bleu1", 0.5, 0.8, (0.2, 0.4)),
    ]
    summary = {"table": table, "verdict": {"well_formed": well_formed}}
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    """An ``--out`` folder holding two runs, and a third run's own folder."""
    out = tmp_path / "seed0"
    write_run(out / "runs" / "20261207-100000", (0.05, 0.15), (-0.08, -0.02), 0.9)
    write_run(out / "runs" / "20261207-110000", (-0.02, 0.2), (-0.1, 0.01), 1.0)
    single = write_run(
        tmp_path / "seed1" / "runs" / "20261207-120000", (0.01, 0.2), (-0.1, 0.0), 0.8
    )
    return [out, single]


def test_runs_are_read_from_out_folders_and_run_folders_with_their_judged_scores(
    three_runs,
) -> None:
    runs = load_runs(three_runs)
    assert [run.name.split("/")[-1] for run in runs] == [
        "seed0:20261207-100000",
        "seed0:20261207-110000",
        "20261207-120000",
    ]
    first = runs[0]
    assert list(first.scores) == ["vqa/en", "landmark/zh", "report/en"]  # judged rows only
    assert first.scores["vqa/en"].move == 1 and first.scores["landmark/zh"].move == -1
    assert (first.raised, first.lowered, first.well_formed) == (2, 1, 0.9)


def test_across_runs_counts_each_score_and_the_spread_of_the_raised_counts(three_runs) -> None:
    summary = across_runs(load_runs(three_runs))
    assert summary["scores"]["vqa/en"] == {
        "runs": 3,
        "raised": 2,
        "lowered": 0,
        "mean_change": pytest.approx(0.1),
    }
    assert summary["scores"]["landmark/zh"]["lowered"] == 1
    assert summary["scores"]["report/en"]["raised"] == 3
    assert [run["raised"] for run in summary["runs"]] == [2, 1, 2]
    assert summary["raised_mean"] == pytest.approx(5 / 3, abs=1e-3)
    assert summary["raised_sd"] == pytest.approx(0.577, abs=1e-3)


def test_the_command_prints_the_table_and_json(three_runs, capsys) -> None:
    assert main(["seeds", *map(str, three_runs)]) == 0
    printed = capsys.readouterr().out
    assert "vqa/en" in printed and "0.70+" in printed and "0.05-" in printed
    assert "raised per run: mean 1.7, standard deviation 0.6, from 1 to 2 over 3 runs" in printed

    assert main(["seeds", "--json", *map(str, three_runs)]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["scores"]["report/en"]["raised"] == 3


def test_a_folder_without_a_summary_or_a_broken_one_is_named(tmp_path, capsys) -> None:
    empty = tmp_path / "unfinished"
    (empty / "runs" / "20261207-130000").mkdir(parents=True)
    assert main(["seeds", str(empty)]) == 2
    assert "unfinished: no summary.json" in capsys.readouterr().err
    assert main(["seeds", str(tmp_path / "typo")]) == 2
    assert "typo: no such file or folder" in capsys.readouterr().err

    broken = tmp_path / "broken" / "summary.json"
    broken.parent.mkdir()
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(SummaryError, match=r"broken/summary\.json: not a simulation summary"):
        load_runs([broken.parent])
