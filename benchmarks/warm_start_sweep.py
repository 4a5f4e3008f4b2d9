"""How far a warm start on public records takes the base, by public patients and steps.

For each count of ``--public-patients`` this sets that many of a public dataset's train patients
apart as public records (as ``fedumit simulate --public-patients`` does, at most a quarter of
them), and for each count of ``--steps`` warm-starts the tiny base on them
(:func:`server.warm_start.warm_start`, no noise, no site's record) and answers the hospitals'
closed questions of the validation and test splits with the result: each task's strict
headline score, the share of well-formed answers and the option AUC
(:mod:`shared_model.option_scores`), beside the majority answer's score. This is round 0 of a
simulated run with that warm start, measured without training the consortium; choose on the
validation rows. Prints a table and writes JSON.

    python benchmarks/warm_start_sweep.py [--dataset pneumoniamnist] [--public-patients 256 1024]
        [--steps 80 400] [--lr 3e-3] [--batch 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dp_learning import start, write_result

from client.archive import load_site_samples
from client.config import SiteConfig
from server.warm_start import WarmStart, warm_start
from shared_model.evaluation import score_predictions
from shared_model.option_scores import option_auc
from shared_model.sample import Sample
from shared_model.spec import ModelSpec
from shared_model.tasks import get_task
from shared_model.tiny import tiny_spec
from simulations.datasets import (
    PUBLIC_DATASETS,
    patient_count,
    public_archives,
    public_stand_in,
)
from simulations.heldout import answer_and_rank
from simulations.majority import headline_scores, majority_baseline

SPLITS = ("val", "test")


def closed_samples(archives: list[Path], spec: ModelSpec, split: str, work: Path) -> list[Sample]:
    """The closed questions (classification and closed VQA) of ``split`` at every hospital."""
    samples = []
    for archive in archives:
        config = SiteConfig(
            path=archive / "manifest.jsonl", name=archive.name, archive=archive, work_dir=work
        )
        loaded, _ = load_site_samples(
            config,
            canvas=spec.canvas,
            slices=spec.volume_slices,
            splits=[split],
            tasks=["classification", "vqa"],
        )
        samples += loaded
    return [s for s in samples if get_task(s.task).option_targets(s.fields, s.lang)]


def scores(model: Path, spec: ModelSpec, samples: list[Sample]) -> dict[str, float]:
    """The model's headline scores, well-formed shares and option AUCs on ``samples``."""
    answers = answer_and_rank(model, samples, spec)
    scored = score_predictions(samples, answers.readings)
    well_formed = {key: value for key, value in scored.items() if key.endswith("/well_formed")}
    return {**headline_scores(scored), **well_formed, **option_auc(samples, answers.likelihoods)}


def majority_scores(samples: list[Sample]) -> dict[str, float]:
    """The majority answer's headline scores on ``samples``."""
    positions, readings = majority_baseline(samples)
    return headline_scores(score_predictions([samples[p] for p in positions], readings))


def sweep_table(rows: list[dict], majority: dict[str, dict[str, float]]) -> Table:
    """One row per setting and split: every score of :func:`scores`, the majority's in the
    title."""
    keys = sorted({key for row in rows for split in SPLITS for key in row[split]})
    baseline = ", ".join(
        f"{split} {key} {value:.3f}" for split in SPLITS for key, value in majority[split].items()
    )
    table = Table(title=f"warm-started base, round 0 (majority answer: {baseline})")
    for column in ("public\npatients", "steps", "split", *(key.replace("/", "\n") for key in keys)):
        table.add_column(column, justify="right")
    for row in rows:
        for split in SPLITS:
            table.add_row(
                str(row["public_patients"]),
                str(row["steps"]),
                split,
                *(f"{row[split][k]:.3f}" if k in row[split] else "-" for k in keys),
            )
    return table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=PUBLIC_DATASETS, default="pneumoniamnist")
    parser.add_argument("--data-root", type=Path, default=None, help="as fedumit simulate")
    parser.add_argument("--limit", type=int, default=None, help="items per split of a dataset")
    parser.add_argument("--public-patients", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--steps", type=int, nargs="+", default=[80, 400])
    parser.add_argument("--lr", type=float, default=WarmStart.learning_rate)
    parser.add_argument("--batch", type=int, default=WarmStart.batch)
    parser.add_argument("--seed", type=int, default=0, help="the hospitals' and the sampling's")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/warm_start_sweep"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console, base = start(args.seed)
    spec = tiny_spec(base)
    rows: list[dict] = []
    held_out: dict[str, list[Sample]] = {}
    with tempfile.TemporaryDirectory(prefix="fedumit-warm-sweep-") as scratch:
        for count in args.public_patients:
            folder = Path(scratch) / f"public-{count}"
            archives = public_archives(
                args.dataset,
                folder,
                data_root=args.data_root,
                limit=args.limit,
                seed=args.seed,
                public_patients=count,
            )
            if not held_out:  # the same records whatever is set apart from the train split
                held_out = {s: closed_samples(archives, spec, s, folder / "w") for s in SPLITS}
            public = public_stand_in(folder, args.dataset)
            given = patient_count(public)
            for steps in args.steps:
                settings = WarmStart(steps, args.batch, args.lr, args.seed)
                model = folder / f"warm-{steps}"
                console.print(f"{given} public patients ({count} asked), {steps} steps: warm start")
                warmed = warm_start(spec, public, model, settings)
                row = {"public_patients": given, "steps": steps}
                row.update({split: scores(model, warmed, held_out[split]) for split in SPLITS})
                rows.append(row)
    majority = {split: majority_scores(held_out[split]) for split in SPLITS}
    console.print(sweep_table(rows, majority))
    settings = {**vars(args), "out": str(args.out), "data_root": str(args.data_root)}
    write_result(args.out, {"settings": settings, "majority": majority, "rows": rows}, console)


if __name__ == "__main__":
    main()
