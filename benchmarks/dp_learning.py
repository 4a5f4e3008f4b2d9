"""How fast the ``instruct`` stage learns with and without DP noise, and what a DP step carries.

One process, the hospitals' training records pooled (no federation, no ``align`` stage), the
site's own trainer (per-patient clipping, Gaussian noise, AdamW): a quick way to ask whether a
learning rate, a clipping norm, a LoRA layout or a noise level can learn at all, before paying
for a federated run. The hospitals are the synthetic ones or a public dataset split as
``fedumit simulate --dataset`` splits it. Each ``--every`` steps is one call of the trainer, so
AdamW starts afresh as it does at a site every round; after each it reports, besides the
strict headline score and well-formed share of each task and language on held-out records:

- the mean answer loss of a fixed set of training records;
- ``option_auc`` of closed questions (:mod:`shared_model.option_scores`): whether the model
  ranks the right option higher, which moves before its first choice does;
- the step's signal against its noise, from exact per-record gradients of a fixed set of
  training records (one record a patient, as a step samples them): the share of records whose
  gradient norm exceeds the clipping norm ``C``, the median norm, and the norm of the mean
  clipped gradient over ``C`` (1 when every record pulls the same way, near 0 when they cancel),
  beside the noise's norm on the mean gradient over ``C``, ``sigma sqrt(d) / (q N)``.

Prints a table and writes JSON.

The noise multiplier is calibrated to ``--epsilon`` at ``--delta`` for the run's sample rate and
steps over the pooled patients (``--sigma`` sets it instead; ``--sigma 0`` clips without noise,
``--no-dp`` neither clips nor adds noise; ``--subspace k`` clips and noises in ``k`` directions of
a generated public archive's gradients, found again every ``--every`` steps, as a site with a
``[subspace]`` section does each round). A federation of three sites that averages its sites'
updates adds a site's noise divided by about the square root of three to the same signal: pass
the sigma that matches the federation to compare.

    python benchmarks/dp_learning.py [--patients 400] [--steps 135] [--lr 5e-3] [--sigma 0.6]
    python benchmarks/dp_learning.py --dataset pneumoniamnist --max-grad-norm 1 --rank 1
    python benchmarks/dp_learning.py --batch 288 --sigma 4.35 --steps 45 --every 15 --lr 3e-3 \\
        --tasks classification
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from client.config import Policy, load_site_config
from client.privacy import SiteRandomness
from client.privacy.accounting import calibrate_noise
from client.privacy.answer_prior import RELEASE_STAGE, release_answer_counts
from client.privacy.contrast import public_controls
from client.privacy.per_unit import clip_and_sum
from client.site import public_records
from client.trainer import LocalTrainer, TrainConfig
from shared_model.device import configure_cpu_threads
from shared_model.evaluation import evaluate_samples
from shared_model.inference import Answerer
from shared_model.loading import stage_model
from shared_model.option_scores import option_auc, option_log_likelihoods
from shared_model.sample import Sample
from shared_model.spec import LoraSpec
from shared_model.tasks import STAGE_TASKS, get_task
from shared_model.tiny import (
    INSTRUCT_TARGETS,
    SPEC_FILE,
    TINY_ANSWER_VOCABULARY,
    ensure_tiny_base,
    tiny_spec,
)
from simulations.cli import DATASETS, add_tasks_argument
from simulations.datasets import PARTITIONS
from simulations.experiment import Consortium, public_archive, site_archives
from simulations.heldout import held_out_samples, pooled_samples

PROBE_RECORDS = 96
SYNTHETIC_PER_GROUP = 80
"""Held-out records scored per task and language of the synthetic hospitals: enough to see a
score move, few enough to evaluate every ``--every`` steps."""
PUBLIC_STAND_INS = 512
SIGNAL_ROWS = (
    ("clipped share", "clipped_share", "{:.2f}"),
    ("median gradient norm", "median_norm", "{:.3f}"),
    ("|mean clipped gradient| / C", "signal", "{:.3f}"),
)


def pooled_hospitals(args: argparse.Namespace, base: Path, subspace: int = 0) -> list[Path]:
    """Site configs of three hospitals over ``base`` (synthetic, or ``args.dataset`` split as
    ``fedumit simulate`` splits it), written under ``args.out`` as ``fedumit simulate`` writes
    them (their budgets unused: this process draws its own noise); with ``subspace``, a
    ``[subspace]`` section of that many directions over a public archive of the hospitals' kind
    (:func:`simulations.experiment.public_archive`)."""
    hospitals = argparse.Namespace(
        **{**vars(args), "archives": None, "sites": 3, "subspace": subspace}
    )
    archives = site_archives(hospitals)
    table = None
    if subspace:
        public = public_archive(hospitals, args.out, Console(quiet=True), "--subspace", "")
        table = {"public_archive": str(public), "directions": subspace}
    consortium = Consortium(args.out, base / SPEC_FILE, archives, table)
    return consortium.site_configs("pooled", archives, epsilon=8.0, dp=False, seed=args.seed)


def synthetic_hospitals(args: argparse.Namespace, base: Path, subspace: int = 0) -> list[Path]:
    """:func:`pooled_hospitals` of the synthetic hospitals (IID), for a benchmark whose options
    hold only their size (``--patients``), ``--seed`` and ``--out``."""
    synthetic = argparse.Namespace(
        **vars(args), dataset="synthetic", data_root=None, partition="iid", alpha=0.5, limit=None
    )
    return pooled_hospitals(synthetic, base, subspace)


def public_stand_ins(public: list[Sample], template: list[Sample], count: int) -> list[Sample]:
    """Up to ``count`` of ``template``'s records (their prompts), each with the images of a
    public record of the same image shapes in place of its own (public records cycle)."""
    return [c for c in public_controls(public, template) if c is not None][:count]


def probe_loss(trainer: LocalTrainer, records: list[Sample]) -> float:
    """Mean answer loss of ``records`` under the trainer's current adapter."""
    encoded = trainer.encode(records)
    with torch.no_grad():
        total = sum(
            trainer.answer_losses(encoded[start : start + 16]).sum().item()
            for start in range(0, len(encoded), 16)
        )
    return total / len(encoded)


def clipped_mean(
    trainer: LocalTrainer, records: list[Sample], max_grad_norm: float
) -> tuple[list[torch.Tensor], list[float]]:
    """The mean of ``records``' clipped gradients, per trainable parameter, clipped as the
    trainer clips a unit (its stage's clip groups included), and each record's gradient norm
    before clipping. Exact per-record gradients, one backward pass a record."""
    parameters = [parameter for _, parameter in trainer.adapter.trainable_parameters()]
    summed = [torch.zeros_like(parameter) for parameter in parameters]
    norms = []
    for example in trainer.encode(records):
        loss = trainer.answer_losses([example]).sum()
        grads = torch.autograd.grad(loss, parameters, allow_unused=True)
        unit = {
            parameter: (torch.zeros_like(parameter) if grad is None else grad).unsqueeze(0)
            for grad, parameter in zip(grads, parameters, strict=True)
        }
        clipped, norm = clip_and_sum(unit, max_grad_norm, trainer.clip_groups)
        norms.append(float(norm[0]))
        for total, parameter in zip(summed, parameters, strict=True):
            total.add_(clipped[parameter])
    return [total / len(records) for total in summed], norms


def step_signal(
    trainer: LocalTrainer, records: list[Sample], max_grad_norm: float
) -> dict[str, float]:
    """What a DP step of ``records`` (one a patient) would sum before its noise: the share of
    records whose gradient norm exceeds ``max_grad_norm``, their median norm, and the norm of
    their mean clipped gradient over the clipping norm."""
    mean, norms = clipped_mean(trainer, records, max_grad_norm)
    return {
        "clipped_share": sum(norm > max_grad_norm for norm in norms) / len(norms),
        "median_norm": statistics.median(norms),
        "signal": torch.sqrt(sum((part**2).sum() for part in mean)).item() / max_grad_norm,
    }


def evaluate(trainer: LocalTrainer, held_out: list[Sample]) -> dict[str, float]:
    """Each group's strict headline score and well-formed share on the held-out records, and
    the option AUC of its closed questions."""
    model = trainer.adapter.model
    answerer = Answerer(model, trainer.processor, trainer.spec.canvas)
    scores = evaluate_samples(answerer, held_out)
    kept = {
        key: value
        for key, value in scores.items()
        if key.split("/")[2] in (get_task(key.split("/")[0]).headline, "well_formed")
    }
    likelihoods = option_log_likelihoods(model, trainer.processor, trainer.spec, held_out)
    return {**kept, **option_auc(held_out, likelihoods)}


def print_table(rows: list[dict], groups: list[tuple[str, str]], console: Console) -> None:
    """One column per evaluation: the probe loss, each task and language's strict headline
    score / well-formed share and option AUC, then the step's signal."""
    table = Table(title="instruct stage, hospitals pooled: strict headline / well-formed")
    table.add_column("after step")
    for row in rows:
        table.add_column(str(row["step"]), justify="right")
    table.add_row("answer loss", *(f"{row['probe_loss']:.3f}" for row in rows))
    for task, lang in groups:
        cells = []
        for row in rows:
            headline = row["scores"].get(f"{task}/{lang}/{get_task(task).headline}")
            formed = row["scores"].get(f"{task}/{lang}/well_formed")
            cells.append("-" if headline is None else f"{headline:.2f} / {formed:.2f}")
        table.add_row(f"{task} {lang}", *cells)
        aucs = [row["scores"].get(f"{task}/{lang}/option_auc") for row in rows]
        if any(auc is not None for auc in aucs):
            cells = ["-" if auc is None else f"{auc:.3f}" for auc in aucs]
            table.add_row(f"{task} {lang} option AUC", *cells)
    for label, key, form in SIGNAL_ROWS:
        table.add_row(label, *(form.format(row["signal"][key]) for row in rows))
    console.print(table)


def add_hospital_arguments(parser: argparse.ArgumentParser, dataset: str = "synthetic") -> None:
    """The options that choose the hospitals, as ``fedumit simulate``'s."""
    parser.add_argument("--dataset", choices=DATASETS, default=dataset)
    parser.add_argument("--data-root", type=Path, default=None, help="as fedumit simulate")
    parser.add_argument("--partition", choices=PARTITIONS, default="iid")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=None, help="items per split of a dataset")
    parser.add_argument("--patients", type=int, default=400, help="per hospital, as simulate")
    parser.add_argument("--seed", type=int, default=0, help="the hospitals' and training's")


def write_result(out: Path, result: dict, console: Console) -> Path:
    """Write a benchmark's ``result`` as JSON at ``out`` with a ``.json`` suffix."""
    path = out.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    console.print(f"written to {path}")
    return path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dp_learning"))
    add_hospital_arguments(parser)
    parser.add_argument("--steps", type=int, default=135)
    parser.add_argument("--every", type=int, default=45)
    parser.add_argument("--batch", type=int, default=96, help="expected patients a step")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--dp", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--sigma", type=float, default=None, help="instead of --epsilon")
    parser.add_argument("--max-grad-norm", type=float, default=0.1)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument(
        "--records-per-unit", type=int, default=1, help="most records of a patient a step"
    )
    add_tasks_argument(parser, "trained, pooled")
    parser.add_argument("--targets", default=INSTRUCT_TARGETS, help="LoRA target modules")
    parser.add_argument("--frozen-a", action="store_true", help="train LoRA's B matrices only")
    parser.add_argument(
        "--answer-rows",
        action="store_true",
        help="train lm_head's rows of the tiny base's answer vocabulary as well",
    )
    parser.add_argument(
        "--rows-lr-scale",
        type=float,
        default=1.0,
        help="the answer rows' learning rate as a multiple of --lr (with --answer-rows)",
    )
    parser.add_argument(
        "--readout-map",
        action="store_true",
        help="train the answer rows (--answer-rows) through a whitening map, found each "
        "--every steps on public images under the training records' prompts",
    )
    parser.add_argument(
        "--balance-answers",
        action="store_true",
        help="weigh each closed question's answer classes the same, from the pooled answer "
        "counts released with the sites' default noise, as a site with [policy] "
        "balance_answers does",
    )
    parser.add_argument(
        "--clip-groups", nargs="*", default=[], help="regexes of the clip groups (model spec)"
    )
    parser.add_argument(
        "--control-weight",
        type=float,
        default=0.0,
        help="each record's loss minus this multiple of its loss over a public image (0: off)",
    )
    parser.add_argument(
        "--subspace",
        type=int,
        default=0,
        help="clip and noise in k directions of public records' gradients (0: off), as a "
        "site with a [subspace] section does",
    )
    parser.add_argument(
        "--per-group",
        type=int,
        default=None,
        help=f"held-out records a group (default: {SYNTHETIC_PER_GROUP} synthetic, all of a "
        "public dataset's)",
    )
    parser.add_argument(
        "--split",
        choices=("val", "test"),
        default="val",
        help="the held-out split scored (choose settings on val; the test split only reports)",
    )
    args = parser.parse_args()
    if args.per_group is None and args.dataset == "synthetic":
        args.per_group = SYNTHETIC_PER_GROUP
    return args


def start(seed: int) -> tuple[Console, Path]:
    """A benchmark's start: CPU threads configured, torch seeded, the console, the tiny base."""
    configure_cpu_threads()
    torch.manual_seed(seed)
    return Console(), ensure_tiny_base(progress=False)


def main() -> None:
    args = parse_args()
    console, base = start(args.seed)
    if args.readout_map and not args.answer_rows:
        raise SystemExit("--readout-map trains the answer rows: add --answer-rows")
    public_archive = args.subspace or int(args.readout_map) or int(args.control_weight > 0)
    sites = pooled_hospitals(args, base, public_archive)
    spec = tiny_spec(base)
    spec = replace(
        spec,
        instruct=LoraSpec(
            args.rank,
            2.0 * args.rank,
            target_modules=args.targets,
            modules_to_save=(),
            frozen_a=args.frozen_a,
            clip_groups=tuple(args.clip_groups),
            answer_vocabulary=TINY_ANSWER_VOCABULARY if args.answer_rows else (),
        ),
    )
    train = [
        s
        for s in pooled_samples(sites, spec, "train")
        if args.tasks is None or s.task in args.tasks
    ]
    patients = sorted({s.patient_id for s in train})
    rate = min(1.0, args.batch / len(patients))
    sigma = args.sigma
    if sigma is None:
        sigma = calibrate_noise(
            target_epsilon=args.epsilon, delta=args.delta, sample_rate=rate, steps=args.steps
        )
    sigma = sigma if args.dp else 0.0
    held_out = held_out_samples(sites, spec, per_group=args.per_group, split=args.split)
    groups = sorted(
        {(s.task, s.lang) for s in held_out}, key=lambda g: (STAGE_TASKS["instruct"].index(g[0]), g)
    )
    adapter, processor = stage_model(spec, "instruct")
    trainer = LocalTrainer(adapter, processor, spec, torch.device("cpu"))
    probe = random.Random(args.seed).sample(train, min(PROBE_RECORDS, len(train)))
    trainable = sum(p.numel() for _, p in adapter.trainable_parameters())
    noise = sigma * trainable**0.5 / (rate * len(patients))
    console.print(
        f"{len(train)} training records of {len(patients)} patients, "
        f"{len(held_out)} {args.split} records; "
        f"{trainable} trainable parameters; q {rate:.3f}, sigma {sigma:.3f}, lr {args.lr:g}; "
        f"noise on a step's mean gradient {noise:.3f} C"
    )

    def evaluation(step: int) -> dict:
        return {
            "step": step,
            "probe_loss": probe_loss(trainer, probe),
            "scores": evaluate(trainer, held_out),
            "signal": step_signal(trainer, probe, args.max_grad_norm),
        }

    public = public_records(load_site_config(sites[0]), spec, "instruct")
    shuffled = random.Random(args.seed + 1).sample(train, len(train))
    stand_ins = public_stand_ins(public, shuffled, PUBLIC_STAND_INS) if args.readout_map else []
    controls = public_controls(public, train) if args.control_weight else None
    weights = None
    if args.balance_answers:
        counts = release_answer_counts(
            train,
            [s.patient_id for s in train],
            Policy().answer_count_noise,
            SiteRandomness.replayable(args.seed, "pooled", RELEASE_STAGE),
        )
        weights = counts.weights(train)
    rows = [evaluation(0)]
    done = 0
    while done < args.steps:
        steps = min(args.every, args.steps - done)
        config = TrainConfig(
            steps=steps,
            sample_rate=rate,
            learning_rate=args.lr,
            dp=args.dp,
            noise_multiplier=sigma,
            max_grad_norm=args.max_grad_norm,
            max_records_per_unit=args.records_per_unit,
            rows_lr_scale=args.rows_lr_scale,
            control_weight=args.control_weight,
        )
        subspace = (
            trainer.gradient_subspace(public, args.subspace, config) if args.subspace else None
        )
        readout_map = trainer.readout_map(stand_ins) if args.readout_map else None
        trainer.train(
            train,
            [s.patient_id for s in train],
            config,
            subspace=subspace,
            readout_map=readout_map,
            record_weights=weights,
            controls=controls,
            progress=True,
        )
        done += steps
        rows.append(evaluation(done))
    print_table(rows, groups, console)
    settings = {**vars(args), "out": str(args.out), "sigma": sigma, "sample_rate": rate}
    settings["data_root"] = None if args.data_root is None else str(args.data_root)
    result = {"settings": settings, "trainable": trainable, "noise_over_c": noise, "rows": rows}
    write_result(args.out, result, console)


if __name__ == "__main__":
    main()
