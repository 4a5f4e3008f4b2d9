"""What the order of questions costs when a model answers a test split in batches.

``shared_model.evaluation.answer_samples`` asks questions in batches of one task, language and
image kind and puts the answers back in order. This answers the same test records (the
synthetic hospitals' test split, as ``fedumit simulate`` writes and reads them) both ways, in
the records' own order and grouped, with one model, and prints the seconds each took, their
ratio from this one run, and how many answers differ. Prints a table and writes JSON.

    python benchmarks/answering_order.py [--patients 400] [--model DIR] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dp_learning import add_hospital_arguments, pooled_hospitals, start, write_result

from shared_model.evaluation import answer_samples
from shared_model.inference import Answer, Answerer, Question, load_answerer
from shared_model.sample import Sample
from shared_model.tiny import tiny_spec
from simulations.heldout import held_out_samples


def in_record_order(answerer: Answerer, samples: Sequence[Sample], batch_size: int) -> list[Answer]:
    """The answers asked in consecutive batches of the records' own order."""
    answers: list[Answer] = []
    for first in range(0, len(samples), batch_size):
        chunk = samples[first : first + batch_size]
        answers += answerer.answer([Question(s.images, s.task, s.lang, s.fields) for s in chunk])
    return answers


def timed(answer, *args) -> tuple[float, list[Answer]]:
    """Seconds ``answer(*args)`` took, and what it returned."""
    started = time.perf_counter()
    answers = answer(*args)
    return time.perf_counter() - started, answers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_hospital_arguments(parser)
    parser.add_argument("--model", type=Path, default=None, help="default: the tiny base")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--per-group", type=int, default=None, help="test records a group")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/answering_order"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console, base = start(args.seed)
    spec = tiny_spec(base)
    sites = pooled_hospitals(args, base)
    samples = held_out_samples(sites, spec, per_group=args.per_group)
    answerer = load_answerer(args.model or base, spec.canvas, device="cpu")
    console.print(f"{len(samples)} test records, batches of {args.batch_size}")
    record_order, before = timed(in_record_order, answerer, samples, args.batch_size)
    grouped, after = timed(answer_samples, answerer, samples, args.batch_size)
    differ = sum(a.text != b.text for a, b in zip(before, after, strict=True))
    table = Table(title="answering a test split in batches")
    for column in ("order", "seconds", "ratio to record order"):
        table.add_column(column, justify="left" if column == "order" else "right")
    table.add_row("records' own", f"{record_order:.1f}", "1.00")
    table.add_row("task, language, image kind", f"{grouped:.1f}", f"{grouped / record_order:.2f}")
    console.print(table)
    console.print(f"answers that differ: {differ} of {len(samples)}")
    result = {
        "settings": {**vars(args), "out": str(args.out), "model": str(args.model)},
        "records": len(samples),
        "record_order_s": record_order,
        "grouped_s": grouped,
        "ratio": grouped / record_order,
        "answers_differ": differ,
    }
    write_result(args.out, result, console)


if __name__ == "__main__":
    main()
