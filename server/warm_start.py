"""A warm start: the base fine-tuned on public records before a consortium trains on its own.

Whatever public records can teach should not be paid for with the sites' privacy budget. On
PneumoniaMNIST the tiny base writes none of its answers in the question's format at round 0
(it was never asked about pneumonia), so the first DP rounds spend the budget on
``0:normal`` / ``1:pneumonia`` before anything of the images. A few dozen noise-free steps over
a public archive of the same kind teach the format and a first reading of the images, and the
federation starts from there (measured in :mod:`simulations.defaults`).

The coordinator (or anyone) runs it once, before the consortium, on records anyone may see:
the public archive is read by the sites' own archive reader, its ``instruct`` records drawn in
proportion to their balanced weights (each closed question's answers drawn equally often, from
exact counts: the records are public; :mod:`client.privacy.answer_prior`), the adapter trained
without noise on a warm-up-and-decay schedule (the tiny base's own pretraining loop) and merged
into the base. The result is a new base, a plain Hugging Face checkpoint with its model spec
beside it, which the consortium's sites name in ``[model] spec`` like any other base. No
site's record is read and no site's budget is spent; the public archive must hold no record of
any site's patients.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared_model.spec import ModelSpec


UNSCHEDULABLE_STEPS = 10
"""The one step count the training loop cannot schedule: its one-cycle rate
(``torch.optim.lr_scheduler.OneCycleLR``, warm-up over a tenth of the steps) divides by zero
when the warm-up is exactly one step long."""


@dataclass(frozen=True)
class WarmStart:
    """How long and how hard the public records are trained on (``instruct``'s adapter)."""

    steps: int = 80
    batch: int = 32
    """Expected patients a step."""
    learning_rate: float = 3e-3
    """The sites' rate without DP (:mod:`simulations.defaults`)."""
    seed: int = 0
    """Keys the adapter's initialisation and the sampling: a warm start repeats."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or not self.learning_rate > 0:
            raise ValueError(f"a warm start needs positive steps, batch and rate, got {self}")
        if self.steps == UNSCHEDULABLE_STEPS:
            raise ValueError(
                f"a warm start of {UNSCHEDULABLE_STEPS} steps cannot be scheduled (its one-cycle "
                "rate would warm up over a single step); choose 9 or 11"
            )


def warm_start(
    spec: ModelSpec,
    public_archive: Path,
    out: Path,
    settings: WarmStart = WarmStart(),
    *,
    device: str = "auto",
    progress: bool = True,
) -> ModelSpec:
    """Train ``spec``'s ``instruct`` adapter on ``public_archive``'s training records without
    noise, merge it into the base and save the result in ``out`` as a base with its spec
    beside it (the same layout, ``base`` now ``out``); return that spec."""
    # imported here: the CLI reads :class:`WarmStart`'s defaults while ``fedumit --help`` runs
    import torch

    from client.archive import load_site_samples
    from client.config import SiteConfig
    from client.privacy.answer_prior import release_answer_counts
    from client.privacy.randomness import SiteRandomness
    from shared_model.device import OnDevice, resolve_device
    from shared_model.export import export_merged
    from shared_model.inputs import encode_sample
    from shared_model.loading import stage_model
    from shared_model.spec import write_spec_beside
    from shared_model.tasks import STAGE_TASKS
    from shared_model.tiny.build import fit

    with torch.random.fork_rng(devices=[]):  # the adapter's initialisation, keyed by the seed
        torch.manual_seed(settings.seed)
        adapter, processor = stage_model(spec, "instruct", device=resolve_device(device))
    with tempfile.TemporaryDirectory(prefix="fedumit-warm-start-") as scratch:
        config = SiteConfig(
            path=public_archive / "manifest.jsonl",
            name="public warm start",
            archive=public_archive,
            work_dir=Path(scratch),
        )
        samples, _ = load_site_samples(
            config,
            canvas=spec.canvas,
            slices=spec.volume_slices,
            splits=["train"],
            tasks=STAGE_TASKS["instruct"],
            progress=progress,
        )
    if not samples:
        raise ValueError(f"{public_archive} holds no training record of an instruct task")
    units = [sample.patient_id or sample.record_id for sample in samples]
    counts = release_answer_counts(samples, units, 0.0, SiteRandomness.replayable(settings.seed))
    weights = counts.weights(samples)
    examples = [encode_sample(processor, sample, spec) for sample in samples]
    draw = random.Random(settings.seed)
    fit(
        OnDevice(adapter.model),
        processor,
        lambda _: draw.choices(examples, weights, k=settings.batch),
        settings.steps,
        settings.learning_rate,
        "warm start on public records",
        progress,
    )
    arrays = adapter.arrays()
    export_merged(spec, out, align_arrays=None, instruct_arrays=arrays, model_card=_card(settings))
    warmed = dataclasses.replace(spec, base=out)
    write_spec_beside(warmed, out)
    return warmed


def _card(settings: WarmStart) -> str:
    return (
        "# Warm-started base\n\n"
        f"The base of `fedumit-model.toml`, its `instruct` adapter trained for {settings.steps} "
        f"noise-free steps of {settings.batch} public patients at {settings.learning_rate:g} "
        "and merged (`server/warm_start.py`). Trained on public records only: no site's record "
        "and no site's privacy budget.\n"
    )
