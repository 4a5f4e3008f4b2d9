"""How much of a DP step's clipped signal depends on the image: each answer's mean clipped
gradient with its own images against the same answer on other records' images.

DP-SGD clips each patient's gradient to ``C`` before the noise, so what a step can learn is
what the clipped gradients share. For each answer ``a`` of a closed task (classification,
VQA) and language, over the hospitals' training records at the base's ``instruct`` adapter:

- ``own``: the mean clipped gradient, over ``C``, of records whose answer is ``a``;
- ``other images``: the same for records of the same question whose answer is another,
  relabelled ``a`` (their own images, the same prompt, the answer ``a``);
- ``image part``: the norm of the difference, over ``C``: what the image adds to learning to
  write ``a``, the only part of the step that teaches the task rather than the answer's
  prior;
- their cosine.

Exact per-record gradients, one backward a record (``dp_learning.clipped_mean``). Prints a
table and writes JSON.

    python benchmarks/image_signal.py [--records 40] [--dataset pneumoniamnist]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dp_learning import add_hospital_arguments, clipped_mean, pooled_hospitals, start, write_result

from client.trainer import LocalTrainer
from shared_model.loading import stage_model
from shared_model.sample import Sample
from shared_model.tasks import get_task
from shared_model.tiny import tiny_spec
from simulations.heldout import pooled_samples

ANSWER_FIELD = {"classification": "label", "vqa": "answer"}
"""The field that holds a record's answer, for the tasks measured."""
SMALLEST_GROUP = 10
TABLE_WIDTH = 110
"""Characters the table needs (a log file's console is 80 wide)."""


def relabelled(sample: Sample, answer: object, name: str) -> Sample:
    """``sample`` with its answer field set to ``answer`` (a new record id, so that the
    trainer's encoding cache keeps both)."""
    fields = {**sample.fields, ANSWER_FIELD[sample.task]: answer}
    return dataclasses.replace(sample, record_id=f"{sample.record_id}#{name}", fields=fields)


def flat_mean(trainer: LocalTrainer, records: list[Sample], max_grad_norm: float) -> torch.Tensor:
    """The records' mean clipped gradient over the clipping norm, flattened."""
    mean, _ = clipped_mean(trainer, records, max_grad_norm)
    return torch.cat([part.flatten() for part in mean]) / max_grad_norm


def answer_rows(
    trainer: LocalTrainer,
    train: list[Sample],
    records: int,
    max_grad_norm: float,
    seed: int,
    smallest: int = SMALLEST_GROUP,
) -> list[dict]:
    """One row per (task, language, question, answer) with at least ``smallest`` records
    answering it and as many answering the same question otherwise."""
    rng = random.Random(seed)
    rows = []
    for task_name in ANSWER_FIELD:
        task = get_task(task_name)
        for lang in ("en", "zh"):
            by_question: dict[str, list[tuple[str, Sample]]] = {}
            for sample in (s for s in train if s.task == task_name and s.lang == lang):
                prompt = task.prompt(sample.fields, lang)
                answered = (task.target(sample.fields, lang), sample)
                by_question.setdefault(prompt, []).append(answered)
            for prompt, answered in sorted(by_question.items()):
                for answer in sorted({target for target, _ in answered}):
                    members = [s for target, s in answered if target == answer]
                    others = [s for target, s in answered if target != answer]
                    if min(len(members), len(others)) < smallest:
                        continue
                    row = compare(trainer, members, others, answer, records, max_grad_norm, rng)
                    question = prompt.splitlines()[0]
                    rows.append({"task": task_name, "lang": lang, "question": question, **row})
    return rows


def compare(
    trainer: LocalTrainer,
    members: list[Sample],
    others: list[Sample],
    answer: str,
    records: int,
    max_grad_norm: float,
    rng: random.Random,
) -> dict:
    """``answer``'s mean clipped gradient on up to ``records`` of its own records against the
    same on as many ``others`` relabelled to it: their norms, the difference's, the cosine."""
    own = rng.sample(members, min(records, len(members)))
    value = own[0].fields[ANSWER_FIELD[own[0].task]]
    swapped = [relabelled(s, value, answer) for s in rng.sample(others, min(records, len(others)))]
    with_own = flat_mean(trainer, own, max_grad_norm)
    with_other = flat_mean(trainer, swapped, max_grad_norm)
    return {
        "answer": answer,
        "records": len(own),
        "own": with_own.norm().item(),
        "other_images": with_other.norm().item(),
        "image_part": (with_own - with_other).norm().item(),
        "cosine": torch.nn.functional.cosine_similarity(with_own, with_other, dim=0).item(),
    }


def print_table(rows: list[dict], console) -> None:
    table = Table(title="mean clipped gradient / C: own images against other records' images")
    for column in ("task", "lang", "question", "answer"):
        table.add_column(column, max_width=14, no_wrap=True, overflow="ellipsis")
    for column in ("records", "own", "other images", "image part", "cosine"):
        table.add_column(column, justify="right", min_width=5)
    for row in rows:
        table.add_row(
            row["task"],
            row["lang"],
            row["question"],
            row["answer"],
            str(row["records"]),
            *(f"{row[key]:.3f}" for key in ("own", "other_images", "image_part", "cosine")),
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_hospital_arguments(parser)
    parser.add_argument("--records", type=int, default=40, help="records an answer, each way")
    parser.add_argument("--max-grad-norm", type=float, default=0.1, help="the clipping norm C")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/image_signal"))
    args = parser.parse_args()
    console, base = start(args.seed)
    sites = pooled_hospitals(args, base)
    spec = tiny_spec(base)
    train = pooled_samples(sites, spec, "train")
    adapter, processor = stage_model(spec, "instruct")
    trainer = LocalTrainer(adapter, processor, spec, torch.device("cpu"))
    rows = answer_rows(trainer, train, args.records, args.max_grad_norm, args.seed)
    print_table(rows, Console(width=max(console.width, TABLE_WIDTH)))
    settings = {**vars(args), "out": str(args.out)}
    settings["data_root"] = None if args.data_root is None else str(args.data_root)
    write_result(args.out, {"settings": settings, "rows": rows}, console)


if __name__ == "__main__":
    main()
