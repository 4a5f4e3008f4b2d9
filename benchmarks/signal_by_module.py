"""Where a DP step's signal lives in the ``instruct`` adapter, module by module.

DP-SGD clips each patient's gradient to ``C`` and adds the same noise to every coordinate, so a
module that holds a small share of the clipped gradient learns noise only. For each LoRA matrix
(and the merger's), over ``--records`` training patients of the pooled hospitals (one record
each, as a step samples them), this prints its parameters ``d``, its share of the squared norm
of their mean clipped gradient, and its signal per coordinate per step: that norm restricted to
the module, over ``sqrt(d)``, over the noise's standard deviation on a coordinate of a step's
mean gradient, ``sigma C / batch`` (``--sigma`` and ``--batch`` default to a site of the main
job at epsilon 8). Clipping is the trainer's own, clip groups included (``--clip-groups``).
Measured at the base and again after ``--steps`` steps without noise, when LoRA's ``B`` is no
longer zero and the ``A`` matrices get a gradient too. Prints a table and writes JSON.

    python benchmarks/signal_by_module.py [--records 300] [--steps 45] [--clip-groups 'visual\\.']
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dp_learning import clipped_mean, start, synthetic_hospitals

from client.trainer import LocalTrainer, TrainConfig
from shared_model.loading import stage_model
from shared_model.tiny import tiny_spec
from simulations.heldout import pooled_samples

MODULE = re.compile(r"(?:merger\.mlp\.(\d)|layers\.(\d+)\.(?:self_attn|mlp)\.(\w+?))\.lora_([AB])")


def module_of(name: str) -> str:
    """``L0 v_proj B`` (a language-model layer's LoRA matrix) or ``merger.2 A`` for a LoRA
    array's name; the name itself for any other."""
    found = MODULE.search(name)
    if found is None:
        return name
    merger, layer, projection, matrix = found.groups()
    return f"merger.{merger} {matrix}" if merger else f"L{layer} {projection} {matrix}"


def by_module(trainer: LocalTrainer, mean: list[torch.Tensor]) -> dict[str, dict[str, float]]:
    """Each module's parameters and squared norm of ``mean`` (the mean clipped gradient)."""
    modules: dict[str, dict[str, float]] = collections.defaultdict(lambda: {"d": 0, "sq": 0.0})
    for (name, parameter), part in zip(trainer.adapter.trainable_parameters(), mean, strict=True):
        module = modules[module_of(name)]
        module["d"] += parameter.numel()
        module["sq"] += float((part**2).sum())
    return dict(modules)


def measurement(trainer: LocalTrainer, probe: list, args: argparse.Namespace) -> dict:
    """The mean clipped gradient of ``probe`` split by module, with shares and densities."""
    mean, _ = clipped_mean(trainer, probe, args.max_grad_norm)
    modules = by_module(trainer, mean)
    total = sum(m["sq"] for m in modules.values())
    noise = args.sigma / args.batch  # per coordinate of a step's mean gradient, over C
    for module in modules.values():
        module["share"] = module["sq"] / total
        module["snr"] = (module["sq"] ** 0.5 / module["d"] ** 0.5 / args.max_grad_norm) / noise
    return {"signal_over_c": total**0.5 / args.max_grad_norm, "modules": modules}


def print_table(title: str, result: dict, console: Console) -> None:
    table = Table(title=f"{title}: |mean clipped gradient| / C {result['signal_over_c']:.3f}")
    for column in ("module", "parameters", "share of signal", "signal / noise a coordinate"):
        table.add_column(column, justify="left" if column == "module" else "right")
    rows = sorted(result["modules"].items(), key=lambda item: -item[1]["snr"])
    for name, module in rows:
        table.add_row(name, str(module["d"]), f"{module['share']:.3f}", f"{module['snr']:.4f}")
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/signal_by_module"))
    parser.add_argument("--patients", type=int, default=400, help="per hospital, as simulate")
    parser.add_argument("--records", type=int, default=300, help="patients measured")
    parser.add_argument("--steps", type=int, default=45, help="no-DP steps before the second")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-grad-norm", type=float, default=0.1)
    parser.add_argument("--sigma", type=float, default=1.73, help="noise multiplier")
    parser.add_argument("--batch", type=float, default=96, help="expected patients a step")
    parser.add_argument("--clip-groups", nargs="*", default=None, help="instead of the spec's")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console, base = start(args.seed)
    spec = tiny_spec(base)
    if args.clip_groups is not None:
        spec = replace(spec, instruct=replace(spec.instruct, clip_groups=tuple(args.clip_groups)))
    train = pooled_samples(synthetic_hospitals(args, base), spec, "train")
    by_patient: dict[str, list] = collections.defaultdict(list)
    for sample in train:
        by_patient[sample.patient_id].append(sample)
    rng = random.Random(args.seed)
    patients = rng.sample(sorted(by_patient), min(args.records, len(by_patient)))
    probe = [rng.choice(by_patient[patient]) for patient in patients]
    adapter, processor = stage_model(spec, "instruct")
    trainer = LocalTrainer(adapter, processor, spec, torch.device("cpu"))

    results = {"base": measurement(trainer, probe, args)}
    print_table("at the base", results["base"], console)
    config = TrainConfig(
        steps=args.steps,
        sample_rate=min(1.0, args.batch / len(by_patient)),
        learning_rate=args.lr,
        dp=False,
    )
    trainer.train(train, [s.patient_id for s in train], config)
    results["trained"] = measurement(trainer, probe, args)
    print_table(f"after {args.steps} steps without noise", results["trained"], console)
    settings = {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "signal_by_module.json"
    path.write_text(json.dumps({"settings": settings, **results}, indent=2), encoding="utf-8")
    console.print(f"written to {path}")


if __name__ == "__main__":
    main()
