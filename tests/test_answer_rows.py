"""The answer vocabulary's output rows: which rows train, that they travel and merge like the
LoRA matrices, and that nothing else of ``lm_head`` ever moves. Their exact per-sample DP
gradients are checked against a brute force in ``tests/test_dp_exact.py``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from client.privacy.per_unit import PerSampleGradients
from shared_model.adapters import StageAdapter
from shared_model.answer_rows import ROWS_MARKER, answer_token_ids
from shared_model.loading import load_base
from shared_model.tiny import TINY_ANSWER_VOCABULARY


@pytest.fixture(scope="module")
def tokenizer(tiny_spec):
    return AutoTokenizer.from_pretrained(tiny_spec.base)


@pytest.fixture
def rows_spec(tiny_spec):
    """The tiny spec with the tiny base's answer vocabulary in ``instruct``."""
    return replace(
        tiny_spec, instruct=replace(tiny_spec.instruct, answer_vocabulary=TINY_ANSWER_VOCABULARY)
    )


def test_each_entry_is_written_in_the_rows_it_names(tokenizer) -> None:
    ids = answer_token_ids(["nodule", "结节", "<|box_start|>", "7"], tokenizer)
    assert ids == sorted(set(ids))
    for text in ("nodule", " nodule", "结节", "7"):
        written = tokenizer(text, add_special_tokens=False).input_ids
        assert set(written) <= set(ids) and tokenizer.decode(written) == text
    assert tokenizer.convert_tokens_to_ids("<|box_start|>") in ids
    assert tokenizer.convert_tokens_to_ids("cyst") not in ids


def test_only_the_vocabularys_rows_move_and_they_merge_into_lm_head(rows_spec) -> None:
    model, processor = load_base(rows_spec)
    original = model.lm_head.weight.detach().clone()
    adapter = StageAdapter.attach(model, rows_spec, "instruct")
    expected = answer_token_ids(rows_spec.instruct.answer_vocabulary, processor.tokenizer)
    (name,) = [n for n in adapter.names if ROWS_MARKER in n]
    arrays = adapter.arrays()
    assert arrays[name].shape == (len(expected), original.shape[1])
    np.testing.assert_array_equal(arrays[name], original[expected].numpy())
    assert len(expected) < original.shape[0] // 4

    moved = {**arrays, name: arrays[name] + np.float32(0.5)}
    adapter.load_arrays(moved, rows_spec.fingerprint())
    merged = adapter.merged().lm_head.weight.detach()
    changed = (merged != original).any(1).nonzero().flatten().tolist()
    assert changed == expected
    torch.testing.assert_close(merged[expected], original[expected] + 0.5)


def test_the_rows_are_hooked_once_for_per_sample_gradients(rows_spec) -> None:
    """The rows' parameter sits in a ``ParameterDict`` under the trainable-token layer: the
    layer's hook computes its per-sample gradients, and the dict is not hooked again (which
    would count each gradient twice)."""
    model, _ = load_base(rows_spec)
    adapter = StageAdapter.attach(model, rows_spec, "instruct")
    (rows,) = [p for n, p in adapter.trainable_parameters() if ROWS_MARKER in n]
    hooks = PerSampleGradients(adapter.model)
    assert sum(p is rows for p in hooks.parameters) == 1
    hooks.remove()
