"""Export: the base with both stages merged, as a plain Hugging Face checkpoint, plus the PEFT
adapters of both stages beside it.

Layout of an export directory::

    DIR/                      config.json, model.safetensors, processor and tokenizer files
    DIR/adapters/align/       peft adapter over the base
    DIR/adapters/instruct/    peft adapter over the base with align merged
    DIR/fedumit.json          canvas, slices per volume, fingerprint (for `fedumit infer`)
    DIR/README.md             model card (when given)

The checkpoint loads with ``Qwen2VLForConditionalGeneration.from_pretrained(DIR)``: no FedUMIT
import is needed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from shared_model.loading import load_base, merge_stage
from shared_model.spec import ModelSpec

EXPORT_INFO = "fedumit.json"


def export_merged(
    spec: ModelSpec,
    out: str | Path,
    *,
    align_arrays: Mapping[str, np.ndarray] | None,
    instruct_arrays: Mapping[str, np.ndarray] | None,
    model_card: str | None = None,
) -> Path:
    """Merge the given stages into the base and save checkpoint, processor and adapters."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = spec.fingerprint()
    # in the checkpoint's own dtype: a bf16 2B base exports as 4.4 GB of bf16, like the release
    model, processor = load_base(spec, dtype="auto")
    for stage, arrays in (("align", align_arrays), ("instruct", instruct_arrays)):
        if arrays is None:
            continue
        model = merge_stage(
            model, spec, stage, arrays, fingerprint, save_adapter_to=out / "adapters" / stage
        )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    info = {
        "fingerprint": fingerprint,
        "canvas": spec.canvas,
        "volume_slices": spec.volume_slices,
        "max_text_length": spec.max_text_length,
        "stages": [s for s, a in (("align", align_arrays), ("instruct", instruct_arrays)) if a],
    }
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if model_card is not None:
        (out / "README.md").write_text(model_card, encoding="utf-8")
    return out


def read_export_info(directory: str | Path) -> dict:
    """The ``fedumit.json`` of an export (canvas and slices the model was trained with)."""
    path = Path(directory) / EXPORT_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {directory} is not a FedUMIT export")
    return json.loads(path.read_text(encoding="utf-8"))
