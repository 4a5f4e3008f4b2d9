"""Can adapters travel in bfloat16? What rounding them on the wire does to the aggregate.

The server's arithmetic stays float32; only the arrays on the wire would be bfloat16 (8 bits
of mantissa: a relative rounding error of at most 2^-9). Two measurements:

1. Real rounds on the tiny base: three synthetic hospitals train one DP round of each stage
   (``align``, then ``instruct`` over the merged ``align``) from the same global adapter with
   replayable randomness; FedAvg of their replies in float32 is compared with FedAvg of
   (a) the replies rounded to bfloat16 (absolute weights on the uplink), (b) the updates
   (reply minus global) rounded to bfloat16, and (c) the replies of the same sites trained
   from the global rounded to bfloat16 (the downlink), same sampling and noise.
2. Full-shape-sized random tensors: the full-shape adapters' shapes (from the full-shape spec
   over an empty-weights model), a global of LoRA's initial scale and three replies around it
   with updates of the RMS the real rounds measured; (a) and (b) as above.

For each: the aggregate's error as a share of the aggregate's step (||error|| / ||aggregate -
global||) and per coordinate in bfloat16 units in the last place of the float32 aggregate
(the aggregate's own bfloat16 rounding is at most 0.5 of one). Prints a table and writes JSON.

    python benchmarks/bf16_travel.py [--base DIR] [--out benchmarks/results/bf16_travel.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from wire_bytes import adapter_shapes  # this folder (the script's) is on the path

from client.config import load_site_config
from client.rounds import train_round
from client.site import Site
from server.coordinator import initial_arrays
from server.rules import FedAvg
from shared_model.spec import ModelSpec
from shared_model.tiny import SPEC_FILE, ensure_tiny_base
from simulations.runner import write_site_config
from simulations.synthetic import generate_consortium

Arrays = OrderedDict[str, np.ndarray]
SITES = 3


def bf16(arrays: Arrays) -> Arrays:
    """``arrays`` rounded to bfloat16 (nearest, ties to even) and back to float32."""
    return OrderedDict(
        (n, torch.from_numpy(a).to(torch.bfloat16).to(torch.float32).numpy())
        for n, a in arrays.items()
    )


def fedavg(replies: list[Arrays], weights: list[float], current: Arrays) -> Arrays:
    """The server's float32 FedAvg of ``replies``."""
    rule = FedAvg()
    rule.begin(current)
    for reply, weight in zip(replies, weights, strict=True):
        rule.fold(reply, weight)
    return rule.result()


def flat(arrays: Arrays) -> np.ndarray:
    return np.concatenate([a.ravel().astype(np.float64) for a in arrays.values()])


def compare(reference: Arrays, other: Arrays, current: Arrays) -> dict[str, float]:
    """``other``'s error against ``reference``: share of the step, and in bfloat16 ulps."""
    ref, err = flat(reference), flat(other) - flat(reference)
    step = ref - flat(current)
    ulp = np.exp2(np.floor(np.log2(np.maximum(np.abs(ref), 1e-30))) - 7)
    in_ulps = np.abs(err) / ulp
    return {
        "error_over_step": float(np.linalg.norm(err) / np.linalg.norm(step)),
        "max_ulps": float(in_ulps.max()),
        "share_within_half_ulp": float(np.mean(in_ulps <= 0.5)),
        "step_rms": float(np.sqrt(np.mean(step**2))),
        "weight_rms": float(np.sqrt(np.mean(ref**2))),
    }


def uplink(replies: list[Arrays], weights: list[float], current: Arrays) -> dict[str, dict]:
    """Absolute replies and updates in bfloat16 on the uplink, against float32."""
    reference = fedavg(replies, weights, current)
    absolute = fedavg([bf16(r) for r in replies], weights, current)
    deltas = [
        OrderedDict((n, current[n] + d[n]) for n in current)
        for d in (bf16(OrderedDict((n, r[n] - current[n]) for n in r)) for r in replies)
    ]
    return {
        "absolute": compare(reference, absolute, current),
        "update": compare(reference, fedavg(deltas, weights, current), current),
    }


def site_replies(sites: list[Site], stage: str, current: Arrays, align, server_round: int):
    """Each site's reply and weight to one DP round of ``stage`` from ``current``."""
    config = {
        "stage": stage, "server-round": server_round, "fingerprint": sites[0].fingerprint,
        "run-id": "bf16", "lr": 1e-2 if stage == "align" else 2e-2, "local-steps": 4,
        "batch-size": 8, "dp": True, "noise-multiplier": 1.0, "max-grad-norm": 0.1,
        "physical-batch-size": 8, "rounds-left": 1,
    }  # fmt: skip
    replies = [train_round(site, current, config, align) for site in sites]
    return [r.arrays for r in replies], [r.metrics["num-examples"] for r in replies]


def real_rounds(root: Path, base: Path | None) -> dict[str, dict]:
    """Measurement 1, on the tiny base in ``base`` (default: the machine's cached one)."""
    base = ensure_tiny_base(base, progress=True)
    spec = ModelSpec.from_toml(base / SPEC_FILE)
    archives = generate_consortium(root / "archives", n_sites=SITES, patients=40, seed=11)
    sites = [
        Site(
            load_site_config(
                write_site_config(
                    root / f"{a.name}.toml",
                    name=a.name,
                    archive=a,
                    work_dir=root / a.name,
                    model_spec=base / SPEC_FILE,
                    max_epsilon=1e3,
                    replayable_noise_seed=5,
                )
            ),
            progress=False,
        )
        for a in archives
    ]
    results, align = {}, None
    for server_round, stage in enumerate(("align", "instruct"), start=1):
        current = OrderedDict(initial_arrays(spec, stage, 0, align))
        replies, weights = site_replies(sites, stage, current, align, server_round)
        results[stage] = uplink(replies, weights, current)
        rounded = bf16(current)  # the downlink: the same sites, sampling and noise
        again, _ = site_replies(sites, stage, rounded, align, server_round)
        results[stage]["downlink"] = compare(
            fedavg(replies, weights, current), fedavg(again, weights, rounded), current
        )
        align = fedavg(replies, weights, current)
    return results


def random_full_shape(update_rms: float, seed: int = 0) -> dict[str, dict]:
    """Measurement 2: full-shape adapter shapes, LoRA-scale globals, random updates."""
    from shared_model.full_shape import ensure_full_shape_base, full_shape_spec

    rng = np.random.default_rng(seed)
    results = {}
    for stage, shapes in adapter_shapes(full_shape_spec(ensure_full_shape_base())).items():
        current = OrderedDict(
            (n, (rng.uniform(-1, 1, s) / np.sqrt(s[-1])).astype(np.float32))
            for n, s in shapes.items()
        )
        replies = [
            OrderedDict(
                (n, (a + update_rms * rng.standard_normal(a.shape)).astype(np.float32))
                for n, a in current.items()
            )
            for _ in range(SITES)
        ]
        results[stage] = uplink(replies, [1.0] * SITES, current)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bf16_travel.json"))
    parser.add_argument("--base", type=Path, help="a tiny base directory (default: the cache)")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="fedumit-bf16-") as directory:
        real = real_rounds(Path(directory), args.base)
    update_rms = max(real[s]["absolute"]["step_rms"] for s in real)
    random = random_full_shape(update_rms)
    print(
        f"{'measurement':28} {'stage':9} {'travel':9} {'error/step':>10} {'max ulps':>8}"
        f" {'<=0.5 ulp':>9} {'step RMS':>9} {'weight RMS':>10}"
    )
    for label, results in (("tiny base, real DP rounds", real), ("full shape, random", random)):
        for stage, travels in results.items():
            for travel, m in travels.items():
                print(
                    f"{label:28} {stage:9} {travel:9} {m['error_over_step']:10.2e}"
                    f" {m['max_ulps']:8.2f} {m['share_within_half_ulp']:9.4f}"
                    f" {m['step_rms']:9.2e} {m['weight_rms']:10.2e}"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"tiny_real_rounds": real, "full_shape_random": random, "update_rms": update_rms}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
