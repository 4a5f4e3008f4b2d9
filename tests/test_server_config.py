"""The run config: defaults from pyproject.toml, overrides, errors naming the key."""

from __future__ import annotations

import tomllib

import pytest
from flwr.common.config import flatten_dict

from server.config import RunConfig, RunConfigError
from tests.conftest import REPO_ROOT


def defaults() -> dict:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return flatten_dict(project["tool"]["flwr"]["app"]["config"])


def test_pyproject_defaults_are_a_valid_two_stage_run() -> None:
    config = RunConfig.from_flat(defaults())
    assert [s.name for s in config.stages] == ["align", "instruct"]
    assert config.instruct.lr_at(1) == config.instruct.lr
    assert config.instruct.lr_at(3) == pytest.approx(
        config.instruct.lr * config.instruct.lr_decay**2
    )


def test_stage_selection() -> None:
    skip = RunConfig.from_flat({**defaults(), "stage1-adapter": "a.safetensors"})
    assert [s.name for s in skip.stages] == ["instruct"]
    stop = RunConfig.from_flat({**defaults(), "stop-after-align": True})
    assert [s.name for s in stop.stages] == ["align"]


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("aggregation", "fedsgd", "not one of"),
        ("align.rounds", -1, "below 0"),
        ("fraction-train", 1.5, "outside"),
        ("dp", "yes", "expected bool"),
        ("min-sites", 0, "below 1"),
        ("max-num-examples", 0, "below 1"),
        ("max-num-examples", 1e6, "expected int"),
        ("max-update-norm", -1.0, "outside"),
        ("export-average-rounds", 0, "below 1"),
    ],
)
def test_bad_values_name_the_key(key: str, value, message: str) -> None:
    with pytest.raises(RunConfigError, match=message) as error:
        RunConfig.from_flat({**defaults(), key: value})
    assert error.value.key == key


def test_missing_key_is_named() -> None:
    flat = defaults()
    del flat["instruct.lr"]
    with pytest.raises(RunConfigError, match=r"instruct\.lr\]: missing"):
        RunConfig.from_flat(flat)


def test_code_defaults_equal_pyproject() -> None:
    from server.config import RUN_DEFAULTS

    assert defaults() == RUN_DEFAULTS


def test_a_resumed_run_goes_on_with_the_config_it_started_with(tmp_path) -> None:
    from server.run_folder import RunFolder

    started = RunConfig.from_flat({**defaults(), "align.rounds": 5, "seed": 7, "dp": False})
    folder = RunFolder(tmp_path / "run").create({"run": started.to_dict()})
    launched = RunConfig.from_flat({**defaults(), "resume": str(folder.root)})
    resumed = launched.resuming()
    assert resumed.resume == str(folder.root)
    assert resumed.to_dict() == {**started.to_dict(), "resume": str(folder.root)}
    assert RunConfig.from_dict(started.to_dict()) == started


def test_a_run_folder_saved_before_a_key_existed_resumes_with_its_default() -> None:
    saved = RunConfig.from_flat(defaults()).to_dict()
    del saved["max_num_examples"]
    assert RunConfig.from_dict(saved).max_num_examples == defaults()["max-num-examples"]
