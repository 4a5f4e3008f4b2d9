"""How much of a dataset's closed answers its questions' words give away, without the image.

For the closed questions of a dataset's hospitals (split as ``fedumit simulate`` splits them,
pooled), a logistic regression is fitted on the training split to each question's bag of
words (the words of at least ``--min-count`` training questions), its L2 strength chosen on the
validation split, and scored on the validation and test splits beside the majority answer.
It is a reference, not private and not a FedUMIT model: what reading the question alone can
score without the image. Where it is well above the majority answer (the baseline the
simulation tables print), a model can beat that baseline without reading its images; where it
is not, beating it needs the images. Prints a table and writes JSON.

    python benchmarks/question_prior.py --dataset vqa-rad
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dp_learning import add_hospital_arguments, pooled_hospitals, start, write_result
from linear_probe import SPLITS, class_counts, probe, val_test_table

from shared_model.sample import Sample
from shared_model.tasks import get_task
from shared_model.tiny import tiny_spec
from simulations.heldout import pooled_samples

WORD = re.compile(r"\w+")


def closed_questions(samples: Sequence[Sample]) -> list[Sample]:
    """The closed questions among ``samples``: VQA records with options."""
    return [
        s for s in samples if s.task == "vqa" and get_task("vqa").option_targets(s.fields, s.lang)
    ]


def words(question: str) -> list[str]:
    """A question's words, case-folded."""
    return WORD.findall(question.casefold())


def vocabulary(questions: Sequence[str], min_count: int) -> list[str]:
    """The words of at least ``min_count`` of ``questions``, in first-seen order."""
    counts = collections.Counter(w for q in questions for w in dict.fromkeys(words(q)))
    return [w for w, n in counts.items() if n >= min_count]


def bag_of_words(questions: Sequence[str], vocabulary: Sequence[str]) -> torch.Tensor:
    """One row a question: 1 where it holds a vocabulary word, else 0."""
    column = {word: index for index, word in enumerate(vocabulary)}
    rows = torch.zeros(len(questions), len(vocabulary))
    for row, question in enumerate(questions):
        for word in words(question):
            if word in column:
                rows[row, column[word]] = 1.0
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_hospital_arguments(parser, dataset="vqa-rad")
    parser.add_argument("--min-count", type=int, default=3, help="questions a word must be in")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/question_prior"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console, base = start(args.seed)
    spec = tiny_spec(base)
    sites = pooled_hospitals(args, base)
    samples = {split: closed_questions(pooled_samples(sites, spec, split)) for split in SPLITS}
    labels = {
        split: torch.tensor([get_task("vqa").reference(s.fields) for s in kept])
        for split, kept in samples.items()
    }
    known = vocabulary([s.fields["question"] for s in samples["train"]], args.min_count)
    found = {
        split: bag_of_words([s.fields["question"] for s in kept], known)
        for split, kept in samples.items()
    }
    classes = int(max(int(labels[split].max()) for split in SPLITS)) + 1
    rows = {"the question's words": probe(found, labels, classes)}
    console.print(
        f"closed questions (train, val, test): {[len(s) for s in samples.values()]}; "
        f"{len(known)} words in at least {args.min_count} training questions"
    )
    title = f"closed answers from the question alone, {args.dataset}: val / test"
    console.print(val_test_table(title, "answered from", rows, labels))
    counts = class_counts(labels, classes)
    settings = {**vars(args), "out": str(args.out), "data_root": str(args.data_root)}
    console.print(f"answer counts (train, val, test): {counts}")
    result = {"settings": settings, "answer_counts": counts, "probes": rows}
    write_result(args.out, result, console)


if __name__ == "__main__":
    main()
