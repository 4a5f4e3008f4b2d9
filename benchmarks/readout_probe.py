"""Can DP-SGD learn a classification's answer from the base's hidden state, and in which
coordinates: a DP readout of the position that writes the answer.

The language model writes a closed answer's first token (the option's number) from its final
hidden state ``h`` at one position, through ``lm_head``'s rows of the options' numbers. This
benchmark freezes the base, extracts ``h`` for a dataset's classification records (split as
``fedumit simulate`` splits them), and trains only a change ``V`` of those rows with DP-SGD
(per-record clipping, Gaussian noise, Adam), through a fixed input map ``M``: the logits are
``(W + V M) h``, which a checkpoint holds as the rows ``W + V M``, so ``M`` costs nothing at
inference. Each record's gradient is ``(p - y) (M h)^T``: what ``M`` does to ``h`` decides how
much of the clipped norm is the image's.

- ``raw``: ``M`` is the identity, as ``lm_head``'s rows train today
  (:mod:`shared_model.answer_rows`);
- ``projected``: ``M`` removes the direction of the mean of ``h``;
- ``whitened``: ``M`` removes it and whitens the rest
  (:func:`shared_model.readout_map.whitening_map`, what a site's rows train through).

The statistics behind ``M`` come from the training split itself (``oracle``: what they would
be if a site could measure them for free, which DP does not allow) and from public images
under the dataset's own prompt (``public``: the images of a generated public archive,
:func:`simulations.synthetic.generate_public_archive`, in place of the records' own; the
prompt is the dataset's fixed question). Prints a table of validation and test accuracy,
balanced accuracy and AUC per map, against the training split's majority class, and writes
JSON.

    python benchmarks/readout_probe.py --dataset pneumoniamnist [--sigma 1.64] [--steps 135]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dp_learning import (
    add_hospital_arguments,
    pooled_hospitals,
    public_stand_ins,
    start,
    write_result,
)
from linear_probe import commonest_shape_records, features, scores, val_test_table

from client.config import load_site_config
from client.site import public_records
from shared_model.inference import load_answerer
from shared_model.readout_map import whitening_map
from shared_model.sample import Sample
from shared_model.tasks import get_task
from shared_model.tiny import tiny_spec

MAPS = ("raw", "projected", "whitened")


def answer_hidden(model, processor, spec, samples: list[Sample]) -> torch.Tensor:
    """The final hidden state where each sample's answer's first token is written."""
    layers = model.config.get_text_config().num_hidden_layers
    return features(model, processor, spec, samples)[f"layer {layers}"].float()


def first_answer_tokens(tokenizer, sample: Sample, classes: int) -> list[int]:
    """The first token of each option's answer (they must differ: the readout is theirs)."""
    task = get_task(sample.task)
    firsts = [
        tokenizer(
            task.target({**sample.fields, "label": label}, sample.lang), add_special_tokens=False
        ).input_ids[0]
        for label in range(classes)
    ]
    if len(set(firsts)) != classes:
        raise ValueError(f"the options' answers share their first token: {firsts}")
    return firsts


def input_map(statistics: torch.Tensor, kind: str) -> torch.Tensor:
    """The fixed input map ``M`` of ``kind`` from hidden states ``statistics`` (rows)."""
    size = statistics.shape[1]
    if kind == "raw":
        return torch.eye(size)
    direction = statistics.mean(0) / statistics.mean(0).norm()
    projection = torch.eye(size) - torch.outer(direction, direction)
    return projection if kind == "projected" else whitening_map(statistics)


def train_readout(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor,
    mapping: torch.Tensor,
    args: argparse.Namespace,
) -> torch.Tensor:
    """DP-SGD on ``V`` (Poisson sampling at ``batch / N``, per-record clipping to 1, noise
    ``sigma``, Adam); returns the trained rows ``W + V M``."""
    generator = torch.Generator().manual_seed(args.seed)
    mapped = hidden @ mapping.T
    change = torch.zeros(rows.shape[0], mapping.shape[0], requires_grad=True)
    optimizer = torch.optim.Adam([change], lr=args.lr)
    rate = min(1.0, args.batch / len(labels))
    for _ in range(args.steps):
        chosen = torch.rand(len(labels), generator=generator) < rate
        inputs, targets = mapped[chosen], labels[chosen]
        logits = hidden[chosen] @ rows.T + inputs @ change.detach().T
        residual = logits.softmax(1) - torch.nn.functional.one_hot(targets, len(rows))
        per_record = residual[:, :, None] * inputs[:, None, :]
        norms = per_record.flatten(1).norm(dim=1).clamp(min=1.0)
        summed = (per_record / norms[:, None, None]).sum(0)
        noise = args.sigma * torch.randn(change.shape, generator=generator)
        change.grad = (summed + noise) / (rate * len(labels))
        optimizer.step()
    return rows + change.detach() @ mapping


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_hospital_arguments(parser, dataset="pneumoniamnist")
    parser.add_argument("--batch", type=int, default=288, help="expected records a step")
    parser.add_argument("--sigma", type=float, default=1.64, help="noise multiplier (0: none)")
    parser.add_argument("--steps", type=int, default=135)
    parser.add_argument("--lr", type=float, default=3e-2)
    parser.add_argument("--public-records", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/readout_probe"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console, base = start(args.seed)
    spec = tiny_spec(base)
    answerer = load_answerer(base, spec.canvas, device="cpu")
    model, processor = answerer.model, answerer.processor
    sites = pooled_hospitals(args, base, subspace=1)
    samples, shape = commonest_shape_records(sites, spec)
    labels = {
        split: torch.tensor([get_task(s.task).reference(s.fields) for s in kept])
        for split, kept in samples.items()
    }
    hidden = {split: answer_hidden(model, processor, spec, kept) for split, kept in samples.items()}
    classes = int(labels["train"].max()) + 1
    firsts = first_answer_tokens(processor.tokenizer, samples["train"][0], classes)
    rows = model.lm_head.weight.detach()[firsts].float()
    config = load_site_config(sites[0])
    subspace = dataclasses.replace(config.subspace, records=args.public_records)
    config = dataclasses.replace(config, subspace=subspace)
    public = public_records(config, spec, "instruct")
    stand_ins = public_stand_ins(public, samples["train"], args.public_records)
    statistics = {"oracle": hidden["train"]}
    if len(stand_ins) > 1:
        statistics["public"] = answer_hidden(model, processor, spec, stand_ins)
    console.print(
        f"{[len(kept) for kept in samples.values()]} train/val/test records of {shape}, "
        f"{len(stand_ins)} public stand-ins; |mean h| {hidden['train'].mean(0).norm():.2f}, "
        f"mean |h - mean h| {(hidden['train'] - hidden['train'].mean(0)).norm(dim=1).mean():.2f}"
    )
    results = {
        "base": {
            split: scores((hidden[split] @ rows.T).numpy(), labels[split].numpy())
            for split in ("val", "test")
        }
    }
    for source, found in statistics.items():
        for kind in MAPS[1:] if source == "public" else MAPS:
            trained = train_readout(
                hidden["train"], labels["train"], rows, input_map(found, kind), args
            )
            name = kind if kind == "raw" else f"{kind} ({source})"
            results[name] = {
                split: scores((hidden[split] @ trained.T).numpy(), labels[split].numpy())
                for split in ("val", "test")
            }
    title = f"DP readout of the answer position, {args.dataset}: val / test"
    console.print(val_test_table(title, "readout", results, labels))
    settings = {**vars(args), "out": str(args.out), "data_root": str(args.data_root)}
    write_result(args.out, {"settings": settings, "readouts": results}, console)


if __name__ == "__main__":
    main()
