"""What the ``instruct`` gradient subspace keeps of each task's gradients at the hospitals.

A site with a ``[subspace]`` section clips and noises each patient's gradient in ``k``
directions found on public records' gradients (:mod:`client.privacy.subspace`, an equal share
of them for each task), so what a task can learn under DP is what those directions keep of its
records' gradients at the hospitals. At the tiny base, over ``--records`` training records of
each task of the pooled synthetic hospitals, this prints per task:

- its public records (a task's own leading directions are at most that many);
- the median norm of its records' gradients, against the clipping norm (``C`` 0.1 by default):
  where every record's is above it, clipping scales every record to the same norm;
- its coherence: the norm of its records' mean unit gradient (each record's gradient scaled to
  norm 1, as clipping scales it when every record is clipped), 1 when they all pull the same
  way; the part a step's sum adds up, where the rest averages out like noise;
- the median share of a record's gradient norm kept by the site's basis of ``--subspace``
  directions, and by the task's own ``k`` leading public directions for each ``--ks``;
- the same share of that mean unit gradient.

Prints a table and writes JSON.

    python benchmarks/subspace_coverage.py [--records 64] [--subspace 128] [--ks 8 16 32]
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dp_learning import start, synthetic_hospitals, write_result

from client.config import load_site_config
from client.privacy.subspace import leading_directions, top_directions, unit_rows
from client.site import public_records
from client.trainer import LocalTrainer, TrainConfig
from shared_model.loading import stage_model
from shared_model.tiny import tiny_spec
from simulations.heldout import pooled_samples


def kept(basis: torch.Tensor, rows: torch.Tensor) -> dict[str, float]:
    """What the orthonormal ``basis`` (``d x k``) keeps of unit ``rows``: the median share of
    a row's norm, and the share of their mean's norm."""
    basis = basis.double()
    mean = rows.mean(dim=0)
    return {
        "record": float((rows @ basis).norm(dim=1).median()),
        "mean": float((mean @ basis).norm() / mean.norm().clamp_min(1e-12)),
    }


def coverage(
    public: torch.Tensor,
    public_tasks: Sequence[str],
    site: torch.Tensor,
    site_tasks: Sequence[str],
    directions: int,
    ks: Sequence[int],
) -> dict[str, dict]:
    """Per task of ``site_tasks``: its public records, and what the site's basis of
    ``directions`` (an equal share a task, :func:`top_directions`) and the task's own ``k``
    leading public directions keep of its site records' gradients (:func:`kept`)."""
    basis = top_directions(public, min(directions, len(public)), list(public_tasks))
    public_rows, site_rows = unit_rows(public), unit_rows(site)
    result = {}
    for task in sorted(set(site_tasks)):
        members = [i for i, t in enumerate(site_tasks) if t == task]
        rows = site_rows[members]
        own = public_rows[[i for i, t in enumerate(public_tasks) if t == task]]
        result[task] = {
            "public_records": len(own),
            "median_norm": float(site[members].double().norm(dim=1).median()),
            "coherence": float(rows.mean(dim=0).norm()),
            "site_basis": kept(basis, rows),
            "own": {
                k: kept(leading_directions(own, min(k, len(own))), rows) for k in ks if len(own)
            },
        }
    return result


def print_table(result: dict[str, dict], directions: int, console: Console) -> None:
    """Two tables of :func:`coverage`'s result: the shares kept of a record's gradient, then of
    the task's mean unit gradient."""
    ks = sorted({k for task in result.values() for k in task["own"]})
    for part, title in (("record", "a record's gradient norm"), ("mean", "the mean unit gradient")):
        table = Table(title=f"share of {title} kept at the hospitals")
        for column in ("task", "public", "norm", "coherence", f"basis {directions}"):
            table.add_column(column, justify="left" if column == "task" else "right")
        for k in ks:
            table.add_column(f"own {k}", justify="right")
        for task, row in result.items():
            cells = [row["site_basis"], *(row["own"].get(k) for k in ks)]
            table.add_row(
                task,
                str(row["public_records"]),
                f"{row['median_norm']:.2f}",
                f"{row['coherence']:.2f}",
                *("-" if cell is None else f"{cell[part]:.2f}" for cell in cells),
            )
        console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/subspace_coverage"))
    parser.add_argument("--patients", type=int, default=400, help="per hospital, as simulate")
    parser.add_argument("--records", type=int, default=64, help="training records a task")
    parser.add_argument("--subspace", type=int, default=128, help="the site basis' directions")
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seed", type=int, default=0, help="the hospitals' and the sample's")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console, base = start(args.seed)
    spec = tiny_spec(base)
    sites = synthetic_hospitals(args, base, args.subspace)
    by_task = collections.defaultdict(list)
    for sample in pooled_samples(sites, spec, "train"):
        by_task[sample.task].append(sample)
    rng = random.Random(args.seed)
    site = [
        s
        for task in sorted(by_task)
        for s in rng.sample(by_task[task], min(args.records, len(by_task[task])))
    ]
    adapter, processor = stage_model(spec, "instruct")
    trainer = LocalTrainer(adapter, processor, spec, torch.device("cpu"))
    config = TrainConfig(steps=1, sample_rate=1.0, learning_rate=0.0)
    public = public_records(load_site_config(sites[0]), spec, "instruct")
    console.print(f"{len(public)} public records, {len(site)} hospital records")
    result = coverage(
        trainer.record_gradients(public, config, source="public"),
        [r.task for r in public],
        trainer.record_gradients(site, config),
        [s.task for s in site],
        args.subspace,
        args.ks,
    )
    print_table(result, args.subspace, console)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_result(args.out, {"settings": settings, "tasks": result}, console)


if __name__ == "__main__":
    main()
