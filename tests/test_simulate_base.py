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


def test_the_consortium_keeps_its_spec_when_the_file_beside_the_base_changes(
    tmp_path: Path, tiny_base: Path
) -> None:
    """Another FedUMIT version using the same cached base rewrites the spec beside it; a run
    reads the copy it began with."""
    base = tmp_path / "base"
    base.mkdir()
    for item in tiny_base.iterdir():
        (base / item.name).symlink_to(item)
    (base / SPEC_FILE).unlink()
    shutil.copy(tiny_base / SPEC_FILE, base / SPEC_FILE)
    out = tmp_path / "out"
    out.mkdir()
    consortium_spec = model_spec_file(out, base)
    before = consortium_spec.read_bytes()
    text = (base / SPEC_FILE).read_text(encoding="utf-8")
    (base / SPEC_FILE).write_text(text.replace("volume_slices = 4", "volume_slices = 16"))
    assert consortium_spec.read_bytes() == before
    assert ModelSpec.from_toml(consortium_spec).volume_slices == 4
    assert consortium_spec.parent == out
