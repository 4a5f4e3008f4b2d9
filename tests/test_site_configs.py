"""The example site configs and model spec in ``site_configs/`` load, and config errors name the
key and the file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from client.config import SiteConfigError, load_site_config, site_config_from_dict
from shared_model.spec import STAGES, ModelSpec
from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "site_configs"
SITE_FILES = sorted(EXAMPLES.glob("*.toml"))
SPEC_FILES = sorted((EXAMPLES / "models").glob("*.toml"))
TEMPLATE = EXAMPLES / "university-hospital.toml"


def test_the_examples_are_there() -> None:
    assert len(SITE_FILES) >= 2 and SPEC_FILES


@pytest.mark.parametrize("path", SITE_FILES, ids=lambda p: p.stem)
def test_example_site_config_loads(path: Path) -> None:
    config = load_site_config(path)
    assert config.name == path.stem
    assert config.model_spec is not None and config.model_spec.is_file()
    assert config.model_spec.is_relative_to(EXAMPLES)
    assert not config.work_dir.is_relative_to(config.archive)
    ModelSpec.from_toml(config.model_spec)


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_example_model_spec_fits_a_qwen2_vl(path: Path, tiny_base: Path) -> None:
    """Every stage's LoRA targets and saved modules exist in a Qwen2-VL (the tiny base has the
    real model's module names), and the spec survives a write and read."""
    from shared_model.loading import load_base

    spec = ModelSpec.from_toml(path)
    assert spec.canvas % 28 == 0 and spec.base.name == "Qwen2-VL-2B-Instruct"
    model, _ = load_base(spec.with_base(tiny_base))
    names = [name for name, _ in model.named_modules()]
    for stage in STAGES:
        layout = spec.stage(stage)
        targets = [n for n in names if re.fullmatch(layout.target_modules, n)]
        assert targets, f"{stage}: no module matches {layout.target_modules}"
        tower = "visual" if stage == "align" else "language_model"
        assert all(tower in n for n in targets)
        for module in layout.modules_to_save:
            assert any(n.endswith(f".{module}") for n in names)


def test_example_model_spec_round_trips(tmp_path: Path) -> None:
    for path in SPEC_FILES:
        spec = ModelSpec.from_toml(path)
        copy = spec.write_toml(tmp_path / path.name, base_relative_to=path.parent)
        assert ModelSpec.from_toml(copy).layout() == spec.layout()


def _variant(tmp_path: Path, change: dict[str, dict[str, Any]], drop: tuple = ()) -> Path:
    """The university example with ``change`` merged in and ``(section, key)`` pairs dropped."""
    data = tomllib.loads(TEMPLATE.read_text(encoding="utf-8"))
    for section, values in change.items():
        data.setdefault(section, {}).update(values)
    for section, key in drop:
        del data[section][key]
    path = tmp_path / "hospital.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


BAD_VALUES = [
    ({}, (("site", "name"),), "site.name"),
    ({}, (("site", "archive"),), "site.archive"),
    ({"site": {"device": "gpu"}}, (), "site.device"),
    ({"site": {"work_dir": "/data/pacs-export/fedumit/cache"}}, (), "site.work_dir"),
    ({"site": {"name": 7}}, (), "site.name"),
    ({"site": {"decode_workers": 0}}, (), "site.decode_workers"),
    ({"site": {"decode_workers": 2.5}}, (), "site.decode_workers"),
    ({"imaging": {"ct_window": "liver"}}, (), "imaging.ct_window"),
    ({"imaging": {"ct_window": [40.0, -10.0]}}, (), "imaging.ct_window"),
    ({"imaging": {"intensity_percentiles": [99.0, 1.0]}}, (), "imaging.intensity_percentiles"),
    ({"imaging": {"nifti_volume_index": -1}}, (), "imaging.nifti_volume_index"),
    ({"policy": {"stages": ["pretrain"]}}, (), "policy.stages"),
    ({"policy": {"tasks": ["segmentation"]}}, (), "policy.tasks"),
    ({"policy": {"privacy_unit": "visit"}}, (), "policy.privacy_unit"),
    ({"policy": {"max_epsilon": -1.0}}, (), "policy.max_epsilon"),
    ({"policy": {"max_epsilon": True}}, (), "policy.max_epsilon"),
    ({"policy": {"delta": 1.5}}, (), "policy.delta"),
    ({"policy": {"max_batch_size": "64"}}, (), "policy.max_batch_size"),
    ({"policy": {"require_dp": "yes"}}, (), "policy.require_dp"),
    ({"sites": {"name": "typo"}}, (), "sites"),
    ({"site": {"workdir": "/srv/fedumit/work"}}, (), "site.workdir"),
    ({"model": {"specs": "models/qwen2-vl-2b-instruct.toml"}}, (), "model.specs"),
    ({"imaging": {"ct_windw": "bone"}}, (), "imaging.ct_windw"),
    ({"policy": {"max_epslion": 3.0}}, (), "policy.max_epslion"),
    ({"policy": {"limits": {"max_epsilon": 3.0}}}, (), "policy.limits"),
]


@pytest.mark.parametrize(("change", "drop", "key"), BAD_VALUES, ids=[c[2] for c in BAD_VALUES])
def test_config_error_names_key_and_file(
    tmp_path: Path, change: dict, drop: tuple, key: str
) -> None:
    path = _variant(tmp_path, change, drop)
    with pytest.raises(SiteConfigError) as raised:
        load_site_config(path)
    assert raised.value.key == key and raised.value.path == path.resolve()
    assert str(path.resolve()) in str(raised.value) and f"[{key}]" in str(raised.value)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('[site]\nname = "unterminated\n', encoding="utf-8")
    for path in (broken, tmp_path / "missing.toml"):
        with pytest.raises(SiteConfigError, match=str(path)):
            load_site_config(path)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"policy": {"max_epslion": 3.0}}, "unknown key in [policy]; did you mean 'max_epsilon'?"),
        (
            {"imaging": {"prefer_file_windows": False}},
            "unknown key in [imaging]; did you mean 'prefer_file_window'?",
        ),
        ({"site": {"devise": "cpu"}}, "unknown key in [site]; did you mean 'device'?"),
        ({"policy": {"budget": 3.0}}, "unknown key in [policy]"),
        ({"polcy": {"max_epsilon": 3.0}}, "unknown section; did you mean 'policy'?"),
    ],
)
def test_misspelt_name_is_refused_with_the_closest_known_one(
    tmp_path: Path, change: dict, reason: str
) -> None:
    """A typo must not leave a default in force (``max_epslion`` the default budget)."""
    with pytest.raises(SiteConfigError) as raised:
        load_site_config(_variant(tmp_path, change))
    assert raised.value.reason == reason


def test_section_that_is_not_a_table_is_refused() -> None:
    data = tomllib.loads(TEMPLATE.read_text(encoding="utf-8")) | {"imaging": "lung"}
    with pytest.raises(SiteConfigError) as raised:
        site_config_from_dict(data, TEMPLATE)
    assert raised.value.key == "imaging" and raised.value.reason == "must be a table"


def test_simulation_site_config_loads(tmp_path: Path) -> None:
    from simulations.runner import write_site_config

    path = write_site_config(
        tmp_path / "virtual.toml",
        name="virtual",
        archive=tmp_path / "archive",
        work_dir=tmp_path / "work",
        model_spec=SPEC_FILES[0],
        max_epsilon=3.0,
    )
    config = load_site_config(path)
    assert config.policy.max_epsilon == 3.0 and config.model_spec == SPEC_FILES[0]
