"""Where a classification's image information is lost on its way to the answer: linear probes.

For the classification records of a dataset's hospitals (split as ``fedumit simulate`` splits
them), a logistic regression is fitted on the training split to each kind of feature, its L2
strength chosen on the validation split, and scored on the validation and test splits (the
records whose images have the most common shape, so that radiographs and CT volumes are not
mixed):

- ``pixels``: the images as the model gets them (the canvas, grey levels);
- ``visual tokens``: the patch merger's output, the image as the language model reads it;
- ``answer position, layer l``: the language model's hidden state, after layer ``l``, at the
  position that writes the answer's first token;
- ``the model's own answer``: each option's whole answer scored by the model's likelihood
  (:mod:`shared_model.option_scores`), no fitting: what the model reads out today.

A probe that scores well where the model's own answer does not says the information reaches
that point and what follows it does not read it. Accuracy, balanced accuracy (recall averaged
over the classes) and AUC (one class against the rest, averaged) for each; prints a table and
writes JSON.

    python benchmarks/linear_probe.py --dataset pneumoniamnist [--model DIR]
    python benchmarks/linear_probe.py --dataset adrenalmnist3d --volume-slices 16
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dp_learning import add_hospital_arguments, pooled_hospitals, start, write_result

from shared_model.inference import load_answerer
from shared_model.inputs import collate, encode_sample
from shared_model.option_scores import auc, option_log_likelihoods
from shared_model.sample import Sample
from shared_model.spec import ModelSpec
from shared_model.tasks import get_task
from shared_model.tiny import TINY_SLICES, tiny_spec
from simulations.heldout import pooled_samples

SPLITS = ("train", "val", "test")
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


def features(model, processor, spec: ModelSpec, samples: Sequence[Sample]) -> dict:
    """Each kind of feature of ``samples``, one row a sample: ``pixels``, ``visual tokens``
    and ``layer l`` (the hidden state after layer ``l`` where the answer's first token is
    written)."""
    config = model.config
    columns: dict[str, list[torch.Tensor]] = {}
    for start_at in range(0, len(samples), 32):
        chunk = samples[start_at : start_at + 32]
        inputs = collate(
            [encode_sample(processor, s, spec) for s in chunk], processor.tokenizer.pad_token_id
        ).inputs
        labels = inputs.pop("labels")
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True).hidden_states
        rows = torch.arange(len(chunk))
        writes_answer = (labels != -100).int().argmax(dim=1) - 1
        vision = (inputs["input_ids"] == config.image_token_id) | (
            inputs["input_ids"] == config.video_token_id
        )
        found = {
            "pixels": torch.stack(
                [
                    torch.from_numpy(np.concatenate([i.mean(-1).ravel() for i in s.images]))
                    for s in chunk
                ]
            ).float(),
            "visual tokens": torch.stack([hidden[0][r][vision[r]].flatten() for r in rows]),
            **{f"layer {n}": hidden[n][rows, writes_answer] for n in range(1, len(hidden))},
        }
        for name, value in found.items():
            columns.setdefault(name, []).append(value)
    return {name: torch.cat(parts) for name, parts in columns.items()}


def fit(train: torch.Tensor, labels: torch.Tensor, classes: int, l2: float):
    """A multinomial logistic regression on standardised features (LBFGS); returns a function
    from features to class scores."""
    mean, scale = train.mean(0), train.std(0) + 1e-6
    weights = torch.zeros(train.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=200, line_search_fn="strong_wolfe")
    x = (train - mean) / scale

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weights + bias, labels)
        loss = loss + l2 * (weights**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return lambda rows: (((rows - mean) / scale) @ weights + bias).detach()


def scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and mean one-vs-rest AUC of class scores."""
    chosen = logits.argmax(1)
    present = [c for c in range(logits.shape[1]) if (labels == c).any()]
    recalls = [float((chosen[labels == c] == c).mean()) for c in present]
    aucs = [auc(logits[:, c], labels == c) for c in present if not (labels == c).all()]
    return {
        "accuracy": float((chosen == labels).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "auc": float(np.mean(aucs)) if aucs else float("nan"),
    }


def probe(kind: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], classes: int) -> dict:
    """The probe of one kind of feature: the L2 strength with the best validation accuracy,
    and its scores on the validation and test splits."""
    best = None
    for l2 in L2_GRID:
        model = fit(kind["train"], labels["train"], classes, l2)
        val = scores(model(kind["val"]).numpy(), labels["val"].numpy())
        if best is None or val["accuracy"] > best[1]["accuracy"]:
            best = (l2, val, model)
    l2, val, model = best
    return {
        "l2": l2,
        "val": val,
        "test": scores(model(kind["test"]).numpy(), labels["test"].numpy()),
    }


def class_counts(labels: dict[str, torch.Tensor], classes: int) -> dict[str, list[int]]:
    """How many records of each class every split holds."""
    return {
        split: np.bincount(labels[split].numpy(), minlength=classes).tolist() for split in SPLITS
    }


def own_answer(model, processor, spec: ModelSpec, samples, labels: torch.Tensor) -> dict:
    """The model's own option likelihoods as class scores."""
    likelihoods = option_log_likelihoods(model, processor, spec, samples)
    return scores(np.array(likelihoods), labels.numpy())


def classification_records(sites: Sequence[Path], spec: ModelSpec, split: str) -> list[Sample]:
    """The pooled classification records of ``split``."""
    return [s for s in pooled_samples(sites, spec, split) if s.task == "classification"]


def commonest_shape_records(
    sites: Sequence[Path], spec: ModelSpec
) -> tuple[dict[str, list[Sample]], tuple[tuple[int, ...], ...]]:
    """Each split's pooled classification records whose images have the training split's most
    common shapes, and those shapes."""
    samples = {split: classification_records(sites, spec, split) for split in SPLITS}
    shape = collections.Counter(image_shapes(s) for s in samples["train"]).most_common(1)[0][0]
    return {
        split: [s for s in kept if image_shapes(s) == shape] for split, kept in samples.items()
    }, shape


def image_shapes(sample: Sample) -> tuple[tuple[int, ...], ...]:
    """The shapes of a sample's images: records probed together must share them (a hospital's
    radiographs and CT volumes are probed apart; the most common kind is kept)."""
    return tuple(image.shape for image in sample.images)


def val_test_table(
    title: str, first: str, rows: dict[str, dict], labels: dict[str, torch.Tensor]
) -> Table:
    """A table of each row's validation / test accuracy, balanced accuracy and AUC, and the
    share of the training split's majority class in each."""
    table = Table(title=title)
    for column in (first, "accuracy", "balanced accuracy", "AUC"):
        table.add_column(column, justify="left" if column == first else "right")
    for name, row in rows.items():
        table.add_row(
            name,
            *(
                f"{row['val'][key]:.3f} / {row['test'][key]:.3f}"
                for key in ("accuracy", "balanced_accuracy", "auc")
            ),
        )
    majority = int(labels["train"].mode().values)
    shares = [float((labels[split] == majority).float().mean()) for split in ("val", "test")]
    table.add_row(
        "the training split's majority class", f"{shares[0]:.3f} / {shares[1]:.3f}", "", ""
    )
    return table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_hospital_arguments(parser, dataset="pneumoniamnist")
    parser.add_argument("--model", type=Path, default=None, help="default: the tiny base")
    parser.add_argument(
        "--volume-slices",
        type=int,
        default=TINY_SLICES,
        help="read volumes as this many slices (the vision tower takes any even number)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/linear_probe"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console, base = start(args.seed)
    spec = tiny_spec(base, args.volume_slices)
    answerer = load_answerer(args.model or base, spec.canvas, device="cpu")
    model, processor = answerer.model, answerer.processor
    sites = pooled_hospitals(args, base)
    samples, shape = commonest_shape_records(sites, spec)
    console.print(
        f"classification records whose images are {shape}: {[len(s) for s in samples.values()]}"
    )
    found, labels = {}, {}
    for split in SPLITS:
        labels[split] = torch.tensor([get_task(s.task).reference(s.fields) for s in samples[split]])
        found[split] = features(model, processor, spec, samples[split])
    classes = int(max(int(labels[split].max()) for split in SPLITS)) + 1
    rows = {
        name: probe({split: found[split][name] for split in SPLITS}, labels, classes)
        for name in found["train"]
    }
    rows["the model's own answer"] = {
        split: own_answer(model, processor, spec, samples[split], labels[split])
        for split in ("val", "test")
    }
    console.print(
        val_test_table(f"linear probes, {args.dataset}: val / test", "features", rows, labels)
    )
    counts = class_counts(labels, classes)
    result = {
        "settings": {
            **vars(args),
            "out": str(args.out),
            "data_root": str(args.data_root),
            "model": str(args.model),
        },
        "class_counts": counts,
        "probes": rows,
    }
    console.print(f"class counts (train, val, test): {counts}")
    write_result(args.out, result, console)


if __name__ == "__main__":
    main()
