"""Seconds per step and peak memory of local training with and without DP-SGD, per stage.

Each measurement runs in a fresh process (peak RSS is per process), on the same batch of
records (several per patient, 2D images), on the tiny base shape and on a larger CPU-sized one.
Prints a table and writes JSON.

    python benchmarks/dp_step.py [--steps 8] [--out benchmarks/results/dp_step.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from dataclasses import asdict, replace
from pathlib import Path

SHAPES = {
    "tiny": {},
    "cpu-large": {
        "text_hidden": 512,
        "text_layers": 8,
        "text_heads": 8,
        "text_kv_heads": 4,
        "text_intermediate": 1408,
        "vision_embed": 256,
        "vision_depth": 8,
        "vision_heads": 8,
    },
}
CASES = [("instruct", False), ("instruct", True), ("align", False), ("align", True)]


def measure(shape_name: str, stage: str, dp: bool, steps: int, batch: int, queue) -> None:
    """Build the model in this process, time ``steps`` logical steps, report via ``queue``."""
    import tempfile

    import numpy as np
    import torch

    from client.trainer import LocalTrainer, TrainConfig
    from shared_model.adapters import StageAdapter
    from shared_model.loading import load_base
    from shared_model.sample import Geometry, Sample
    from shared_model.tiny import tiny_spec
    from shared_model.tiny.build import TinyShape, build_tiny_base

    torch.manual_seed(0)
    shape = replace(
        TinyShape(pretrain_steps=1, pretrain_batch=2, public_steps=0), **SHAPES[shape_name]
    )
    with tempfile.TemporaryDirectory() as directory:
        spec = tiny_spec(build_tiny_base(directory, shape, progress=False))
        model, processor = load_base(spec)
        adapter = StageAdapter.attach(model, spec, stage)
        rng = np.random.default_rng(0)
        geometry = Geometry(112, 112, 112)
        samples = [
            Sample(
                f"r{i}",
                f"p{i // 2}",
                "vqa",
                "en",
                "train",
                (rng.integers(0, 255, (112, 112, 3), dtype=np.uint8),),
                (geometry,),
                {
                    "question": "Which side is the lesion on?",
                    "answer": "left",
                    "options": ["left", "right"],
                },
            )
            for i in range(batch)
        ]
        units = [s.patient_id for s in samples]
        trainer = LocalTrainer(adapter, processor, spec, torch.device("cpu"))
        trainer.encode(samples)
        config = TrainConfig(
            steps=1,
            sample_rate=1.0,
            dp=dp,
            physical_batch_size=batch,
            max_records_per_unit=batch,
        )
        trainer.train(samples, units, config, progress=False)  # warm-up
        start = time.perf_counter()
        trainer.train(samples, units, replace(config, steps=steps), progress=False)
        seconds = (time.perf_counter() - start) / steps
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(
        {
            "shape": shape_name,
            "stage": stage,
            "dp": dp,
            "seconds_per_step": seconds,
            "peak_rss_mib": peak_mib,
            "batch": batch,
            "shape_config": asdict(shape),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="records per step (2 per patient)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dp_step.json"))
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows = []
    for shape_name in args.shapes:
        for stage, dp in CASES:
            queue = context.Queue()
            process = context.Process(
                target=measure, args=(shape_name, stage, dp, args.steps, args.batch, queue)
            )
            process.start()
            rows.append(queue.get())
            process.join()
    baseline = {(r["shape"], r["stage"]): r for r in rows if not r["dp"]}
    print(f"{'shape':10} {'stage':9} {'dp':5} {'s/step':>8} {'peak MiB':>9} {'DP/plain':>9}")
    for row in rows:
        plain = baseline[(row["shape"], row["stage"])]
        row["ratio_to_plain"] = row["seconds_per_step"] / plain["seconds_per_step"]
        print(
            f"{row['shape']:10} {row['stage']:9} {row['dp']!s:5} {row['seconds_per_step']:8.3f}"
            f" {row['peak_rss_mib']:9.0f} {row['ratio_to_plain']:9.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
