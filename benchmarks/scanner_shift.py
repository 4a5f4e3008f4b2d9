"""How the base's lesion classes carry from one scanner's framing to another's.

The tiny base is pretrained on a public archive from another scanner than the hospitals'
(:data:`simulations.phantoms.PUBLIC_SCANNER`: a field of view a sixth of the anatomy wider on
every side, twice the noise), so that the federation has the hospitals' own images to learn.
For each scanner of ``--scanners`` (``border:noise``, as :class:`simulations.phantoms.Scanner`
takes them) this writes a public archive imaged by it (every class equally likely, half of the
records Chinese), reads its radiographs' classification records through the sites' own reader,
and scores the model's choice among the listed options by their likelihood
(:mod:`shared_model.option_scores`): per language, each class's recall, the accuracy and what
its records were answered (:mod:`simulations.class_recall`). The border says how large the
anatomy lands on the canvas: at border ``b`` it spans ``1 / (1 + 2 b)`` of it. Prints a table
and writes JSON.

    python benchmarks/scanner_shift.py [--scanners 0.1667:2 0.0833:1 0.04:1 0:1] [--model DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dp_learning import start, write_result

from client.archive import load_site_samples
from client.config import SiteConfig
from shared_model.inference import load_answerer
from shared_model.option_scores import option_log_likelihoods
from shared_model.sample import Sample
from shared_model.spec import ModelSpec
from shared_model.tasks import Reading
from shared_model.tiny import tiny_spec
from simulations.class_recall import class_recall
from simulations.phantoms import HOSPITAL_SCANNER, PUBLIC_SCANNER, Scanner
from simulations.synthetic import OPTIONS, generate_public_archive

DEFAULT_SCANNERS = (
    f"{PUBLIC_SCANNER.border:.4f}:{PUBLIC_SCANNER.noise:g}",
    "0.0833:1",
    "0.04:1",
    f"{HOSPITAL_SCANNER.border:g}:{HOSPITAL_SCANNER.noise:g}",
)
MODEL = "model"
"""The one model's column in :func:`~simulations.class_recall.class_recall`'s rows."""
ARCHIVE_SEED = 55
"""Keys the benchmark's archives apart from the base's pretraining archive and every hospital."""


def parse_scanner(text: str) -> Scanner:
    """``border:noise`` as a :class:`Scanner`."""
    border, noise = (float(part) for part in text.split(":"))
    return Scanner(border=border, noise=noise)


def radiograph_records(scanner: Scanner, patients: int, seed: int, spec: ModelSpec) -> list[Sample]:
    """The radiographs' classification records of a public archive imaged by ``scanner``."""
    with tempfile.TemporaryDirectory(prefix="fedumit-scanner-") as scratch:
        archive = generate_public_archive(Path(scratch) / "archive", patients, seed, scanner)
        config = SiteConfig(
            path=archive / "manifest.jsonl",
            name="scanner shift archive",
            archive=archive,
            work_dir=Path(scratch) / "work",
        )
        samples, _ = load_site_samples(
            config, canvas=spec.canvas, slices=spec.volume_slices, tasks=["classification"]
        )
    return [s for s in samples if not s.is_volume]


def choices(likelihoods: Sequence[Sequence[float]]) -> list[Reading]:
    """Each record's highest-scoring option, as a reading of its answer."""
    return [Reading(int(np.argmax(scores)), int(np.argmax(scores))) for scores in likelihoods]


def accuracy(rows: Sequence[dict]) -> float:
    """The share of records answered right, from :func:`class_recall`'s rows."""
    records = sum(row["records"] for row in rows)
    return sum(row[MODEL] * row["records"] for row in rows) / max(1, records)


def shift_table(scanners: dict[str, dict]) -> Table:
    """One row per scanner and language: the anatomy's share of the canvas's side, each
    class's recall (columns in option order), the accuracy and the records scored."""
    table = Table(
        title="each class's recall by scanner (the option the model scores highest, radiographs)"
    )
    for column in ("border:noise", "lang", "anatomy", *OPTIONS["en"], "accuracy", "records"):
        table.add_column(column, justify="left" if column == "border:noise" else "right")
    for label, scanner in scanners.items():
        for lang in OPTIONS:
            rows = [row for row in scanner["classes"] if row["lang"] == lang]
            recall = {OPTIONS[lang].index(row["class"]): row[MODEL] for row in rows}
            table.add_row(
                label,
                lang,
                f"{scanner['anatomy_share']:.2f}",
                *(f"{recall[i]:.2f}" if i in recall else "-" for i in range(len(OPTIONS[lang]))),
                f"{accuracy(rows):.2f}",
                str(sum(row["records"] for row in rows)),
            )
    return table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scanners", nargs="+", default=list(DEFAULT_SCANNERS))
    parser.add_argument("--patients", type=int, default=160, help="per scanner's archive")
    parser.add_argument("--model", type=Path, default=None, help="default: the tiny base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scanner_shift"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console, base = start(args.seed)
    spec = tiny_spec(base)
    answerer = load_answerer(args.model or base, spec.canvas, device="cpu")
    rows = {}
    for text in args.scanners:
        scanner = parse_scanner(text)
        samples = radiograph_records(scanner, args.patients, ARCHIVE_SEED + args.seed, spec)
        likelihoods = option_log_likelihoods(answerer.model, answerer.processor, spec, samples)
        classes = class_recall(samples, {MODEL: choices(likelihoods)})
        rows[text] = {
            "border": scanner.border,
            "noise": scanner.noise,
            "anatomy_share": 1 / (1 + 2 * scanner.border),
            "accuracy": accuracy(classes),
            "classes": classes,
        }
        console.print(f"{text}: {len(samples)} records scored")
    console.print(shift_table(rows))
    settings = {**vars(args), "out": str(args.out), "model": str(args.model)}
    write_result(args.out, {"settings": settings, "scanners": rows}, console)


if __name__ == "__main__":
    main()
