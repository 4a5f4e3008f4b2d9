"""``fedumit simulate --base DIR``: a checkpoint brings its own model spec when it has one."""

from __future__ import annotations

import shutil
from pathlib import Path

from shared_model.spec import ModelSpec
from shared_model.tiny import SPEC_FILE, TINY_CANVAS
from simulations.experiment import model_spec_file


def test_a_tiny_base_written_elsewhere_keeps_its_canvas_and_layout(
    tmp_path: Path, tiny_base: Path
) -> None:
    """Before, a tiny base given with ``--base`` got the default layout and 448-pixel images,
    and every site refused every round (``prompt of 568 tokens leaves no room``)."""
    spec = ModelSpec.from_toml(model_spec_file(tmp_path, tiny_base))
    assert spec.canvas == TINY_CANVAS
    assert spec.base.resolve() == tiny_base.resolve()
    assert spec == ModelSpec.from_toml(tiny_base / SPEC_FILE)


def test_a_checkpoint_without_a_spec_gets_the_default_layout(
    tmp_path: Path, tiny_base: Path
) -> None:
    plain = tmp_path / "checkpoint"
    plain.mkdir()
    shutil.copy(tiny_base / "config.json", plain / "config.json")
    spec = ModelSpec.from_toml(model_spec_file(tmp_path, plain))
    assert spec.base.resolve() == plain.resolve()
    assert spec.canvas == ModelSpec(base=plain).canvas != TINY_CANVAS
