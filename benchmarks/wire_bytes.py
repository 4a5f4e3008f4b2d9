"""Bytes on the wire per site per round: each stage's adapter as Flower records carry it.

The adapters' layout comes from the model spec over an empty-weights copy of its base (the
config only: no weight is read or allocated), so the full-shape Qwen2-VL-2B base costs
seconds. For each stage, train and evaluate, down (server to site) and up (site to server):
the first ``instruct`` message of a run also carries the frozen stage-1 (``align``) adapter,
later ones only its hash. ``before`` is the code that kept the stage-1 adapter in the ClientApp
process's memory only: under a SuperNode every message is a fresh process, so every later
``instruct`` round was refused (``stage1-missing``) and retried with the adapter. Prints a
table and writes JSON.

    python benchmarks/wire_bytes.py [--spec BASE/fedumit-model.toml | --full-shape]
        [--out benchmarks/results/wire_bytes.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from accelerate import init_empty_weights
from transformers import AutoConfig, Qwen2VLForConditionalGeneration

from protocol import to_record
from shared_model.adapters import StageAdapter
from shared_model.spec import STAGES, ModelSpec


def adapter_shapes(spec: ModelSpec) -> dict[str, OrderedDict[str, tuple[int, ...]]]:
    """Each stage's array names and shapes, from an empty-weights model of ``spec.base``."""
    config = AutoConfig.from_pretrained(spec.base)
    shapes = {}
    for stage in STAGES:
        with init_empty_weights():
            model = Qwen2VLForConditionalGeneration._from_config(config, dtype=torch.float32)
        adapter = StageAdapter.attach(model, spec, stage, fingerprint="layout")
        shapes[stage] = OrderedDict(
            (name, tuple(parameter.shape)) for name, parameter in adapter.trainable_parameters()
        )
    return shapes


def record_bytes(shapes: OrderedDict[str, tuple[int, ...]], dtype: np.dtype) -> int:
    """Bytes of the arrays of ``shapes`` in ``dtype`` as a Flower ``ArrayRecord`` counts them."""
    return to_record({n: np.zeros(s, dtype) for n, s in shapes.items()}).count_bytes()


def per_site_rows(align: int, instruct: int) -> list[dict[str, object]]:
    """Bytes per site per round, down and up, before and after sending stage 1 once."""
    rows = [
        ("align", "train", align, align, align, align, ""),
        ("align", "evaluate", align, align, 0, 0, ""),
        ("instruct round 1", "train", instruct + align, instruct + align, instruct, instruct, ""),
        (
            "instruct round >= 2",
            "train",
            2 * instruct + align,
            instruct,
            instruct,
            instruct,
            "before: refused, then the round retried with stage 1",
        ),
        ("instruct", "evaluate", instruct, instruct, 0, 0, "before: refused (stage1-missing)"),
    ]
    keys = ("stage", "message", "down_before", "down_after", "up_before", "up_after", "note")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--spec", type=Path, help="a model spec TOML (default: the full shape)")
    given.add_argument("--full-shape", action="store_true", help="the full-shape base (default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/wire_bytes.json"))
    args = parser.parse_args()
    if args.spec is not None:
        spec = ModelSpec.from_toml(args.spec)
    else:
        from shared_model.full_shape import ensure_full_shape_base, full_shape_spec

        spec = full_shape_spec(ensure_full_shape_base())
    shapes = adapter_shapes(spec)
    sizes = {
        stage: {
            "parameters": int(sum(np.prod(s) for s in shapes[stage].values())),
            "arrays": len(shapes[stage]),
            "float32_bytes": record_bytes(shapes[stage], np.float32),
            "bfloat16_bytes": record_bytes(shapes[stage], np.uint16),
        }
        for stage in STAGES
    }
    for stage, size in sizes.items():
        print(
            f"{stage:9} {size['parameters']:>12,} parameters in {size['arrays']} arrays: "
            f"{size['float32_bytes'] / 1e6:8.2f} MB float32, "
            f"{size['bfloat16_bytes'] / 1e6:8.2f} MB bfloat16"
        )
    tables = {}
    for dtype in ("float32", "bfloat16"):
        rows = per_site_rows(sizes["align"][f"{dtype}_bytes"], sizes["instruct"][f"{dtype}_bytes"])
        tables[dtype] = rows
        print(f"\nMB per site per round, {dtype} on the wire")
        print(f"{'stage':20} {'message':9} {'down before':>11} {'down after':>10} {'up':>8}  note")
        for r in rows:
            print(
                f"{r['stage']:20} {r['message']:9} {r['down_before'] / 1e6:11.2f}"
                f" {r['down_after'] / 1e6:10.2f} {r['up_after'] / 1e6:8.2f}  {r['note']}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"fingerprint": spec.fingerprint(), "adapters": sizes, "per_site": tables}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
