"""Adapter arrays: exact round trip, refusal of mismatched sets, merge and export."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from shared_model.adapters import AdapterMismatchError, StageAdapter
from shared_model.export import export_merged, read_export_info
from shared_model.inputs import collate, encode_example
from shared_model.loading import load_base, merge_stage
from tests.conftest import lesion_image, lesion_volume


def random_arrays(adapter: StageAdapter, seed: int, scale: float = 0.05) -> dict:
    rng = np.random.default_rng(seed)
    return {
        name: (value + rng.normal(0, scale, value.shape)).astype(np.float32)
        for name, value in adapter.arrays().items()
    }


@pytest.mark.parametrize("stage", ["align", "instruct"])
def test_arrays_round_trip_exactly(tiny_spec, stage: str) -> None:
    model, _ = load_base(tiny_spec)
    adapter = StageAdapter.attach(model, tiny_spec, stage)
    arrays = random_arrays(adapter, seed=1)
    adapter.load_arrays(arrays, tiny_spec.fingerprint())
    back = adapter.arrays()
    assert list(back) == list(arrays) == adapter.names
    for name in arrays:
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], arrays[name])


def test_a_layout_targeting_lm_head_moves_its_lora_and_never_the_output_layer(
    tiny_spec, tmp_path: Path
) -> None:
    layout = replace(tiny_spec.instruct, target_modules="lm_head")
    spec = replace(tiny_spec, instruct=layout)
    model, _ = load_base(spec)
    adapter = StageAdapter.attach(model, spec, "instruct")
    assert adapter.names == [
        "base_model.model.lm_head.lora_A.weight",
        "base_model.model.lm_head.lora_B.weight",
    ]
    arrays = random_arrays(adapter, seed=3)
    adapter.load_arrays(arrays, spec.fingerprint())
    adapter.save(tmp_path / "adapter")
    with safe_open(tmp_path / "adapter" / "adapter_model.safetensors", "pt") as saved:
        assert sorted(saved.keys()) == [
            "base_model.model.lm_head.lora_A.weight",
            "base_model.model.lm_head.lora_B.weight",
        ]


def mismatches(arrays: dict) -> dict[str, tuple[dict, str]]:
    first = next(iter(arrays))
    renamed = {("x." + k if k == first else k): v for k, v in arrays.items()}
    reshaped = {**arrays, first: arrays[first][:-1]}
    retyped = {**arrays, first: arrays[first].astype(np.float64)}
    return {
        "name": (renamed, "names"),
        "shape": (reshaped, "shape"),
        "dtype": (retyped, "float32"),
    }


def test_mismatched_arrays_are_refused_and_change_nothing(tiny_spec) -> None:
    model, _ = load_base(tiny_spec)
    adapter = StageAdapter.attach(model, tiny_spec, "instruct")
    before = adapter.arrays()
    candidate = random_arrays(adapter, seed=2)
    with pytest.raises(AdapterMismatchError, match="fingerprint"):
        adapter.load_arrays(candidate, "0" * 16)
    for label, (arrays, message) in mismatches(candidate).items():
        with pytest.raises(AdapterMismatchError, match=message):
            adapter.load_arrays(arrays, tiny_spec.fingerprint())
        after = adapter.arrays()
        assert all(np.array_equal(before[n], after[n]) for n in before), label


def batch_for(processor):
    examples = [
        encode_example(
            processor, [lesion_image("left")], "Describe.", "left", canvas=112, max_length=384
        ),
        encode_example(
            processor, [lesion_volume("right")], "描述。", "右侧", canvas=112, max_length=384
        ),
    ]
    return collate(examples, processor.tokenizer.pad_token_id).inputs


def test_merge_then_export_keeps_logits(tiny_spec, tmp_path: Path) -> None:
    fingerprint = tiny_spec.fingerprint()
    model, processor = load_base(tiny_spec)
    align = random_arrays(StageAdapter.attach(model, tiny_spec, "align"), seed=3)
    model, processor = load_base(tiny_spec)
    merged_align = merge_stage(model, tiny_spec, "align", align, fingerprint)
    instruct_adapter = StageAdapter.attach(merged_align, tiny_spec, "instruct")
    instruct = random_arrays(instruct_adapter, seed=4)
    instruct_adapter.load_arrays(instruct, fingerprint)
    inputs = batch_for(processor)
    with torch.no_grad():
        unmerged = instruct_adapter.model(**inputs).logits

    out = export_merged(
        tiny_spec, tmp_path / "export", align_arrays=align, instruct_arrays=instruct
    )
    assert (out / "adapters" / "align" / "adapter_config.json").is_file()
    assert (out / "adapters" / "instruct" / "adapter_model.safetensors").is_file()
    assert read_export_info(out)["fingerprint"] == fingerprint
    torch.save(inputs, tmp_path / "inputs.pt")
    torch.save(unmerged, tmp_path / "unmerged.pt")
    script = f"""
import sys, torch
from transformers import Qwen2VLForConditionalGeneration
model = Qwen2VLForConditionalGeneration.from_pretrained({str(out)!r}).eval()
inputs = torch.load({str(tmp_path / "inputs.pt")!r})
with torch.no_grad():
    logits = model(**inputs).logits
reference = torch.load({str(tmp_path / "unmerged.pt")!r})
assert not any(m.split('.')[0] in ('shared_model', 'fedumit', 'client', 'server')
               for m in sys.modules), 'FedUMIT was imported'
print((logits - reference).abs().max().item())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-4
    config = json.loads((out / "adapters" / "instruct" / "adapter_config.json").read_text())
    assert config["r"] == tiny_spec.instruct.rank
