"""How fast the ``instruct`` stage learns the synthetic hospitals' tasks, with and without DP noise.

One process, the hospitals' training records pooled (no federation, no ``align`` stage), the
site's own trainer (per-patient clipping, Gaussian noise, AdamW): a quick way to ask whether a
learning rate, a LoRA layout or a noise level can learn at all, before paying for a federated
run. Every ``--every`` steps it reports the mean answer loss of a fixed set of training records
and the strict headline score and well-formed share of each task and language on held-out test
records. Each ``--every`` steps is one call of the trainer, so AdamW starts afresh as it does
at a site every round. Prints a table and writes JSON.

The noise multiplier is calibrated to ``--epsilon`` at ``--delta`` for the run's sample rate and
steps over the pooled patients (``--sigma`` sets it instead; ``--sigma 0`` clips without noise,
``--no-dp`` neither clips nor adds noise). A federation of three sites that averages its sites'
updates adds a site's noise divided by about the square root of three to the same signal: pass
the sigma that matches the federation to compare.

    python benchmarks/dp_learning.py [--patients 400] [--steps 135] [--lr 5e-3] [--sigma 0.6]
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from client.privacy.accounting import calibrate_noise
from client.trainer import LocalTrainer, TrainConfig
from shared_model.device import configure_cpu_threads
from shared_model.evaluation import answer_samples, score_predictions
from shared_model.inference import Answerer
from shared_model.inputs import collate
from shared_model.loading import stage_model
from shared_model.loss import answer_token_loss, answer_window
from shared_model.sample import Sample
from shared_model.spec import LoraSpec
from shared_model.tasks import STAGE_TASKS, get_task
from shared_model.tiny import INSTRUCT_TARGETS, SPEC_FILE, ensure_tiny_base, tiny_spec
from simulations.experiment import Consortium
from simulations.heldout import pooled_samples, test_samples
from simulations.synthetic import generate_consortium

PROBE_RECORDS = 96
GROUPS = [(task, lang) for task in STAGE_TASKS["instruct"] for lang in ("en", "zh")]


def pooled_hospitals(out: Path, base: Path, patients: int, seed: int) -> list[Path]:
    """Site configs of three synthetic hospitals over ``base``, written under ``out`` as
    ``fedumit simulate`` writes them (their budgets unused: this process draws its own noise)."""
    spec_file = base / SPEC_FILE
    archives = generate_consortium(out / "archives", n_sites=3, patients=patients, seed=seed)
    consortium = Consortium(out, spec_file, archives)
    return consortium.site_configs("pooled", archives, epsilon=8.0, dp=False, seed=seed)


def probe_loss(trainer: LocalTrainer, records: list[Sample]) -> float:
    """Mean answer loss of ``records`` under the trainer's current adapter."""
    encoded = trainer.encode(records)
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(encoded), 16):
            inputs = collate(encoded[start : start + 16], trainer.processor.tokenizer.pad_token_id)
            inputs = inputs.inputs
            labels = inputs.pop("labels")
            window = answer_window(labels)
            logits = trainer.adapter.model(**inputs, logits_to_keep=window).logits
            total += answer_token_loss(logits, labels[:, -window:]).sum().item()
    return total / len(encoded)


def strict_scores(trainer: LocalTrainer, test: list[Sample]) -> dict[str, float]:
    """Each group's strict headline score and well-formed share on the test records."""
    answerer = Answerer(trainer.adapter.model, trainer.processor, trainer.spec.canvas)
    scores = score_predictions(test, answer_samples(answerer, test))
    return {
        key: value
        for key, value in scores.items()
        if key.split("/")[2] in (get_task(key.split("/")[0]).headline, "well_formed")
    }


def print_table(rows: list[dict], console: Console) -> None:
    """One column per evaluation: the probe loss, then each task and language's strict headline
    score / well-formed share."""
    table = Table(title="instruct stage, hospitals pooled: strict headline / well-formed")
    table.add_column("after step")
    for row in rows:
        table.add_column(str(row["step"]), justify="right")
    table.add_row("answer loss", *(f"{row['probe_loss']:.3f}" for row in rows))
    for task, lang in GROUPS:
        cells = []
        for row in rows:
            headline = row["scores"].get(f"{task}/{lang}/{get_task(task).headline}")
            formed = row["scores"].get(f"{task}/{lang}/well_formed")
            cells.append("-" if headline is None else f"{headline:.2f} / {formed:.2f}")
        table.add_row(f"{task} {lang}", *cells)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dp_learning"))
    parser.add_argument("--patients", type=int, default=400, help="per hospital, as simulate")
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
    parser.add_argument("--targets", default=INSTRUCT_TARGETS, help="LoRA target modules")
    parser.add_argument("--per-group", type=int, default=30, help="test records a group")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    configure_cpu_threads()
    torch.manual_seed(args.seed)
    console = Console()
    base = ensure_tiny_base(progress=False)
    sites = pooled_hospitals(args.out, base, args.patients, args.seed)
    spec = tiny_spec(base)
    spec = replace(
        spec,
        instruct=LoraSpec(
            args.rank, 2.0 * args.rank, target_modules=args.targets, modules_to_save=()
        ),
    )
    train = pooled_samples(sites, spec, "train")
    patients = sorted({s.patient_id for s in train})
    rate = min(1.0, args.batch / len(patients))
    sigma = args.sigma
    if sigma is None:
        sigma = calibrate_noise(
            target_epsilon=args.epsilon, delta=args.delta, sample_rate=rate, steps=args.steps
        )
    test = test_samples(sites, spec, per_group=args.per_group)
    adapter, processor = stage_model(spec, "instruct")
    trainer = LocalTrainer(adapter, processor, spec, torch.device("cpu"))
    probe = random.Random(args.seed).sample(train, PROBE_RECORDS)
    trainable = sum(p.numel() for _, p in adapter.trainable_parameters())
    console.print(
        f"{len(train)} training records of {len(patients)} patients, {len(test)} test records; "
        f"{trainable} trainable parameters; q {rate:.3f}, sigma {sigma:.3f}, lr {args.lr:g}"
    )
    rows = [{"step": 0, "probe_loss": probe_loss(trainer, probe), "scores": {}}]
    rows[0]["scores"] = strict_scores(trainer, test)
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
        )
        trainer.train(train, [s.patient_id for s in train], config, progress=True)
        done += steps
        rows.append(
            {
                "step": done,
                "probe_loss": probe_loss(trainer, probe),
                "scores": strict_scores(trainer, test),
            }
        )
    print_table(rows, console)
    settings = {**vars(args), "out": str(args.out), "sigma": sigma, "sample_rate": rate}
    result = {"settings": settings, "trainable": trainable, "rows": rows}
    path = args.out.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    console.print(f"written to {path}")


if __name__ == "__main__":
    main()
