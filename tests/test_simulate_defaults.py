"""The schedule ``fedumit simulate`` and ``fedumit compare`` run when a flag is not given."""

from __future__ import annotations

import json

import pytest

from fedumit.cli import build_parser
from simulations.compare import arm_schedule
from simulations.defaults import (
    DATASET_DEFAULTS,
    SIMULATION_DEFAULTS,
    fill_schedule_defaults,
    learning_rate,
)
from simulations.experiment import SITE_EVAL_RECORDS, Consortium, run_overrides

PNEUMONIA = DATASET_DEFAULTS["pneumoniamnist"]


def parsed(*argv: str, command: str = "simulate"):
    return fill_schedule_defaults(build_parser().parse_args([command, *argv]))


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_a_dataset_with_its_own_schedule_gets_it_and_the_rest_the_synthetic_one(command) -> None:
    args = parsed("--dataset", "pneumoniamnist", command=command)
    assert (
        args.instruct_rounds
        == PNEUMONIA["instruct.rounds"]
        != SIMULATION_DEFAULTS["instruct.rounds"]
    )
    assert args.align_rounds == SIMULATION_DEFAULTS["align.rounds"]
    assert args.max_grad_norm == SIMULATION_DEFAULTS["max-grad-norm"]
    assert parsed(command=command).instruct_rounds == SIMULATION_DEFAULTS["instruct.rounds"]


def test_a_datasets_dp_learning_rate_is_for_runs_with_dp_only() -> None:
    pneumonia, synthetic = parsed("--dataset", "pneumoniamnist"), parsed()
    assert learning_rate(pneumonia, "instruct", dp=True) == PNEUMONIA["instruct.dp-lr"]
    assert learning_rate(pneumonia, "instruct", dp=False) == SIMULATION_DEFAULTS["instruct.lr"]
    assert learning_rate(pneumonia, "align", dp=True) == SIMULATION_DEFAULTS["align.lr"]
    for dp in (True, False):
        assert learning_rate(synthetic, "instruct", dp) == SIMULATION_DEFAULTS["instruct.lr"]


def test_a_flag_wins_over_the_datasets_default() -> None:
    args = parsed("--dataset", "pneumoniamnist", "--instruct-lr", "5e-3", "--instruct-rounds", "2")
    assert args.instruct_rounds == 2
    assert (
        learning_rate(args, "instruct", dp=True)
        == learning_rate(args, "instruct", dp=False)
        == 5e-3
    )


def test_every_held_out_record_is_scored_unless_told() -> None:
    assert parsed().test_per_group is None
    assert parsed("--dataset", "pneumoniamnist").test_per_group is None
    assert parsed("--test-per-group", "30").test_per_group == 30


def test_compare_names_each_arms_learning_rate(tmp_path) -> None:
    args = parsed("--dataset", "pneumoniamnist", command="compare")
    consortium = Consortium(out=tmp_path, spec_file=tmp_path / "spec.toml", archives=[])
    lines = {
        dp: arm_schedule(run_overrides(args, consortium, "arm", sites=3, dp=dp)).splitlines()
        for dp in (True, False)
    }
    assert lines[True][0] == lines[False][0]
    assert lines[True][1].endswith(f"learning rate {PNEUMONIA['instruct.dp-lr']:g}")
    assert lines[False][1].endswith(f"learning rate {SIMULATION_DEFAULTS['instruct.lr']:g}")
    assert f"{PNEUMONIA['instruct.rounds']} round(s)" in lines[True][1]


def test_subspace_sites_share_a_public_archive_of_no_hospitals_patients(tmp_path) -> None:
    from rich.console import Console

    from client.config import load_site_config
    from simulations.experiment import subspace_table
    from simulations.synthetic import generate_consortium

    for off in (parsed("--dataset", "vqa-rad"), parsed("--archives", "a", "b")):
        assert off.subspace == 0 and subspace_table(off, tmp_path, Console()) is None
    assert parsed().subspace == SIMULATION_DEFAULTS["subspace"] > 0  # the main job's
    with pytest.raises(SystemExit, match="cannot tell for --archives"):
        subspace_table(parsed("--archives", "a", "b", "--subspace", "8"), tmp_path, Console())
    table = subspace_table(parsed("--subspace", "8"), tmp_path, Console(quiet=True))
    archives = generate_consortium(tmp_path / "archives", n_sites=2, patients=6)
    consortium = Consortium(tmp_path, tmp_path / "spec.toml", archives, table)
    (tmp_path / "spec.toml").touch()
    configs = [
        load_site_config(p)
        for p in consortium.site_configs("run", archives, epsilon=8.0, dp=True, seed=0)
    ]
    public = {c.subspace.public_archive for c in configs}
    assert len(public) == 1 and all(c.subspace.directions == 8 for c in configs)
    public_patients = patients_of(public.pop())
    hospital_patients = set().union(*(patients_of(archive) for archive in archives))
    assert public_patients and hospital_patients and public_patients.isdisjoint(hospital_patients)


def test_contrast_sites_get_the_public_archive_and_the_weight(tmp_path) -> None:
    from rich.console import Console

    from client.config import load_site_config
    from simulations.experiment import contrast_table
    from simulations.synthetic import generate_consortium

    assert contrast_table(parsed(), tmp_path, Console()) is None  # off by default
    with pytest.raises(SystemExit, match="--contrast needs public records"):
        contrast_table(parsed("--archives", "a", "b", "--contrast", "1"), tmp_path, Console())
    dataset = contrast_table(
        parsed("--dataset", "pneumoniamnist", "--contrast", "1"), tmp_path, Console(quiet=True)
    )
    assert dataset["public_archive"] == str(tmp_path / "archives" / "pneumoniamnist-public")
    table = contrast_table(parsed("--contrast", "0.5"), tmp_path, Console(quiet=True))
    archives = generate_consortium(tmp_path / "archives", n_sites=2, patients=6)
    consortium = Consortium(tmp_path, tmp_path / "spec.toml", archives, contrast=table)
    (tmp_path / "spec.toml").touch()
    configs = [
        load_site_config(p)
        for p in consortium.site_configs("run", archives, epsilon=8.0, dp=True, seed=0)
    ]
    assert {c.contrast.public_archive for c in configs} == {(tmp_path / "public").resolve()}
    assert all(c.contrast.weight == 0.5 and c.subspace is None for c in configs)
    public_patients = patients_of(tmp_path / "public")
    hospital_patients = set().union(*(patients_of(archive) for archive in archives))
    assert public_patients and public_patients.isdisjoint(hospital_patients)


def patients_of(archive) -> set[str]:
    lines = (archive / "manifest.jsonl").read_text().splitlines()
    return {json.loads(line)["patient_id"] for line in lines}


def test_balanced_answers_are_a_datasets_default_that_reaches_every_sites_policy(
    tmp_path,
) -> None:
    from client.config import load_site_config
    from simulations.synthetic import generate_consortium

    assert parsed("--dataset", "pneumoniamnist").balance_answers == 1
    assert parsed().balance_answers == 1  # the main job's
    for off in (("--dataset", "vqa-rad"), ("--archives", "a"), ("--no-balance-answers",)):
        assert not parsed(*off).balance_answers, off
    assert not parsed("--dataset", "pneumoniamnist", "--no-balance-answers").balance_answers
    archives = generate_consortium(tmp_path / "archives", n_sites=2, patients=6)
    (tmp_path / "spec.toml").touch()
    for balanced in (False, True):
        consortium = Consortium(
            tmp_path, tmp_path / "spec.toml", archives, balance_answers=balanced
        )
        configs = consortium.site_configs(f"run-{balanced}", archives, epsilon=8.0, dp=True, seed=0)
        policies = [load_site_config(p).policy for p in configs]
        assert [p.balance_answers for p in policies] == [balanced] * 2
        assert [p.max_eval_records for p in policies] == [SITE_EVAL_RECORDS] * 2


def test_the_export_averages_the_rounds_a_dataset_asks_for_and_the_flag_wins(tmp_path) -> None:
    consortium = Consortium(out=tmp_path, spec_file=tmp_path / "spec.toml", archives=[])

    def averaged(*argv: str) -> int:
        overrides = run_overrides(parsed(*argv), consortium, "run", sites=3, dp=True)
        return overrides["export-average-rounds"]

    assert averaged("--dataset", "pneumoniamnist") == PNEUMONIA["export-average-rounds"] > 1
    assert averaged() == SIMULATION_DEFAULTS["export-average-rounds"] == 1
    assert averaged("--dataset", "pneumoniamnist", "--export-average-rounds", "3") == 3
    assert PNEUMONIA["export-average-rounds"] <= PNEUMONIA["instruct.rounds"]


def test_chosen_tasks_reach_every_sites_policy_and_its_training_records(
    tmp_path, tiny_base
) -> None:
    from client.config import load_site_config
    from client.site import Site
    from shared_model.spec import SPEC_FILE
    from shared_model.tasks import TASK_NAMES
    from simulations.experiment import site_tasks
    from simulations.synthetic import generate_consortium

    assert parsed().tasks is None and site_tasks(None) is None
    chosen = parsed("--tasks", "classification", "detection", "classification").tasks
    assert site_tasks(chosen) == ("caption", "compare", "classification", "detection")
    with pytest.raises(SystemExit):
        parsed("--tasks", "segmentation")
    archives = generate_consortium(tmp_path / "archives", n_sites=2, patients=6)
    for tasks in (None, site_tasks(chosen)):
        consortium = Consortium(tmp_path, tiny_base / SPEC_FILE, archives, tasks=tasks)
        configs = consortium.site_configs(
            f"run-{bool(tasks)}", archives, epsilon=8.0, dp=True, seed=0
        )
        policies = [load_site_config(path).policy for path in configs]
        assert [p.tasks for p in policies] == [tasks or TASK_NAMES] * 2
        site = Site(load_site_config(configs[0]), progress=False)
        trained = {s.task for s in site.samples("train", "instruct")}
        assert trained == (
            {"classification", "detection"}
            if tasks
            else {"vqa", "classification", "report", "detection", "landmark"}
        )
        # stage 1 still has its captions and comparisons, from the archive or derived
        assert {s.task for s in site.samples("train", "align")} <= {"caption", "compare"}
        assert site.samples("train", "align")


def test_a_warm_start_trains_a_base_on_public_records_the_hospitals_do_not_hold(
    tmp_path, tiny_base
) -> None:
    """``--warm-start`` sets the public records apart, warm-starts the base on them once and
    the consortium's spec names that base (round 0 of the run's table)."""
    from rich.console import Console

    from shared_model.spec import ModelSpec
    from simulations.experiment import prepare_consortium
    from simulations.warm_base import WARM_BASES

    assert parsed().warm_start == 0  # the main job's base had its public phase
    assert parsed("--dataset", "pneumoniamnist").warm_start == PNEUMONIA["warm-start"] > 0
    assert parsed("--dataset", "pneumoniamnist", "--warm-start", "0").warm_start == 0
    # PneumoniaMNIST sets more of its train patients apart as public records than the default
    pneumonia = parsed("--dataset", "pneumoniamnist")
    assert pneumonia.public_patients == PNEUMONIA["public-patients"] > parsed().public_patients
    assert parsed("--dataset", "vqa-rad").public_patients == SIMULATION_DEFAULTS["public-patients"]
    with pytest.raises(SystemExit, match="--warm-start needs public records"):
        prepare_consortium(parsed("--archives", "a", "--warm-start", "2"), Console(quiet=True))
    (tmp_path / "tiny-base").symlink_to(tiny_base, target_is_directory=True)
    # two hospitals: the synthetic public archive's patient ids (``C0000``, ...) are also the
    # third hospital's, other patients under the same ids (the trainer keeps sources apart)
    args = parsed("--out", str(tmp_path), "--sites", "2", "--patients", "6", "--warm-start", "2")
    consortium = prepare_consortium(args, Console(quiet=True))
    spec = ModelSpec.from_toml(consortium.spec_file)
    assert spec.base.resolve().parent == (tmp_path / WARM_BASES).resolve()
    assert spec.layout() == ModelSpec.from_toml(tiny_base / "fedumit-model.toml").layout()
    hospital_patients = set().union(*(patients_of(a) for a in consortium.archives))
    assert hospital_patients.isdisjoint(patients_of(tmp_path / "public"))
