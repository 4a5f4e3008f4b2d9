"""Model spec: TOML loading, validation and the fingerprint."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from shared_model.spec import LoraSpec, ModelSpec


def test_spec_round_trips_through_toml(tmp_path: Path, tiny_spec: ModelSpec) -> None:
    toml = tmp_path / "model.toml"
    toml.write_text(
        f"""
[model]
base = "{tiny_spec.base}"
canvas = 112
volume_slices = 4
max_text_length = 300
[model.align]
rank = 4
alpha = 8.0
[model.instruct]
rank = 8
dropout = 0.05
frozen_a = true
clip_groups = ['visual\\.']
""",
        encoding="utf-8",
    )
    spec = ModelSpec.from_toml(toml)
    assert spec.align.rank == 4 and spec.align.alpha == 8.0
    assert spec.align.target_modules == ModelSpec(base=Path(".")).align.target_modules
    assert spec.instruct.rank == 8 and spec.instruct.dropout == 0.05
    assert spec.instruct.frozen_a and not spec.align.frozen_a
    assert spec.instruct.clip_groups == (r"visual\.",) and spec.align.clip_groups == ()
    assert ModelSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "data, message",
    [
        ({"canvas": 100}, "multiple of 28"),
        ({"volume_slices": 3}, "even"),
        ({"colour": 1}, "unknown model spec keys"),
        ({"align": {"rank": 0}}, "rank"),
        ({"instruct": {"clip_groups": ["visual\\.(merger"]}}, "not a regular expression"),
        ({"instruct": {"answer_vocabulary": ["yes", " "]}}, "empty entries"),
        (
            {"instruct": {"answer_vocabulary": ["yes"], "target_modules": "lm_head"}},
            "must not put LoRA on lm_head",
        ),
    ],
)
def test_spec_rejects_bad_values(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_dict({"base": "x", **data})


def test_fingerprint_reads_layout_not_weight_bytes(tmp_path: Path, tiny_spec: ModelSpec) -> None:
    copy = tmp_path / "base"
    shutil.copytree(tiny_spec.base, copy)
    spec = tiny_spec.with_base(copy)
    before = spec.fingerprint()
    assert before == tiny_spec.fingerprint()
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(255 - b for b in data[-64:])  # weight bytes, not the header
    weights.write_bytes(bytes(data))
    assert spec.fingerprint() == before
    assert replace(spec, instruct=LoraSpec(rank=8)).fingerprint() != before
    assert replace(spec, canvas=224).fingerprint() != before
    frozen = replace(spec, instruct=replace(spec.instruct, frozen_a=True))
    assert frozen.fingerprint() != before
    grouped = replace(spec, instruct=replace(spec.instruct, clip_groups=(r"visual\.",)))
    assert grouped.fingerprint() not in (before, frozen.fingerprint())
    rows = replace(spec, instruct=replace(spec.instruct, answer_vocabulary=("yes", "no")))
    assert rows.fingerprint() not in (before, frozen.fingerprint(), grouped.fingerprint())
    # a layout without the options hashes as it did before the options existed
    assert not {"frozen_a", "clip_groups", "answer_vocabulary"} & set(spec.layout()["instruct"])


def test_fingerprint_needs_weights(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="safetensors"):
        ModelSpec(base=tmp_path).fingerprint()
