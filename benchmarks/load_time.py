"""What a fresh ClientApp process pays before it can train: imports, then the base model.

Flower 1.42 (and ``fedumit supernode --cold``) starts a new process for every
message; each imports FedUMIT's ClientApp (torch, transformers, peft, opacus) and loads the
base as the site does (:func:`shared_model.loading.load_base`: safetensors, memory-mapped by
transformers, in float32 as a CPU site loads it or bfloat16 as a GPU site does), then attaches
a stage's adapter. Measured here in one fresh
process, on the full-shape base by default; prints seconds and peak resident memory, and
writes JSON.

    python benchmarks/load_time.py [--spec BASE/fedumit-model.toml] [--stage instruct]
        [--dtype float32|bfloat16]
        [--out benchmarks/results/load_time.json]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_gb() -> float:
    """Peak resident memory of this process so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, help="a model spec TOML (default: the full shape)")
    parser.add_argument("--stage", default="instruct", choices=("align", "instruct"))
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="a CPU site's or a GPU's",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/load_time.json"))
    args = parser.parse_args()
    steps: dict[str, float] = {}
    began = time.perf_counter()
    import client.app  # noqa: F401  (what the ClientApp process imports first)

    steps["import_clientapp_s"] = time.perf_counter() - began
    from shared_model.adapters import StageAdapter
    from shared_model.loading import load_base
    from shared_model.spec import ModelSpec

    if args.spec is not None:
        spec = ModelSpec.from_toml(args.spec)
    else:
        from shared_model.full_shape import ensure_full_shape_base, full_shape_spec

        spec = full_shape_spec(ensure_full_shape_base())
    began = time.perf_counter()
    fingerprint = spec.fingerprint()
    steps["fingerprint_s"] = time.perf_counter() - began
    began = time.perf_counter()
    model, _ = load_base(spec, dtype=args.dtype)
    steps["load_base_s"] = time.perf_counter() - began
    steps["load_base_peak_gb"] = peak_gb()
    began = time.perf_counter()
    StageAdapter.attach(model, spec, args.stage, fingerprint=fingerprint)
    steps["attach_adapter_s"] = time.perf_counter() - began
    steps["process_total_s"] = time.perf_counter() - STARTED
    steps["peak_gb"] = peak_gb()
    parameters = sum(p.numel() for p in model.parameters())
    for key, value in steps.items():
        print(f"{key:22} {value:8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"base": spec.base.name, "dtype": args.dtype, "parameters": parameters, **steps}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
