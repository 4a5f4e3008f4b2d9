"""What a simulated run's DP noise will leave of the signal, said before it trains.

A simulation knows its hospitals' sizes (their archives are on this machine), so ``fedumit
simulate`` prints the forecast ``fedumit plan`` would give for its own schedule
(:mod:`client.privacy.forecast`) before anything trains, and keeps it in the run's summary beside
what was learned. A ratio far below 1 at the full clipping norm says the budget and the
hospitals' sizes leave nothing to learn, whatever the run then shows: VQA-RAD's three hospitals
of about 94 patients end at 1.35, and a tenth of the clipping norm at 0.13.

It is an estimate, taken for the ``instruct`` stage: every round of both stages is counted at
the ``instruct`` batch, so a site's sigma is the one that spends its budget over all the steps
at one rate (what the sites' per-round plans pick when the rounds are alike,
:mod:`client.privacy.budget`), and a site's release of its answer counts (under 1 % more sigma)
is left out. The noise lies in the gradient subspace's directions where the sites have one,
otherwise in every parameter ``instruct`` trains.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from client.archive.manifest import read_manifest
from client.privacy.forecast import Forecast, forecast
from shared_model.loading import stage_parameter_count
from shared_model.spec import ModelSpec

SIGNAL_SHARE = 0.1
"""The share of the clipping norm a step's mean clipped gradient is taken to keep: at the tiny
base about a tenth of a patient's clipped gradient depends on the image
(``benchmarks/image_signal.py``)."""


def training_units(archive: Path) -> int:
    """Patients with training records in ``archive``'s manifest (a record without a patient
    counts as its own unit, as a site samples it)."""
    records, _ = read_manifest(archive)
    return len({r.patient_id or r.record_id for r in records if r.split == "train"})


def schedule_forecast(
    args: argparse.Namespace,
    archives: Sequence[Path],
    spec: ModelSpec,
    subspace: dict | None,
) -> Forecast:
    """The forecast of ``args``'s schedule over ``archives`` at its DP budget."""
    steps = args.align_rounds * args.align_steps + args.instruct_rounds * args.instruct_steps
    dimensions = subspace["directions"] if subspace else stage_parameter_count(spec, "instruct")
    return forecast(
        [training_units(archive) for archive in archives],
        batch=args.instruct_batch,
        steps=steps,
        dimensions=dimensions,
        epsilon=args.epsilon,
        delta=args.delta,
    )


def outlook_line(result: Forecast) -> str:
    """One line for the console: the sites' sigma and what the noise leaves of a consistent
    signal of :data:`SIGNAL_SHARE` clipping norms a step."""
    sigmas = "/".join(f"{site.noise_multiplier:.2f}" for site in result.sites)
    ratio = result.signal_to_noise(SIGNAL_SHARE)
    needed = math.ceil(result.steps_to_match(SIGNAL_SHARE))
    meaning = (
        "below it: what the images teach is unlikely to show, what most patients share is"
        if ratio < 1
        else "above it"
    )
    return (
        f"DP noise (an estimate, as `fedumit plan` gives it): sigma {sigmas} a site over "
        f"{result.steps} steps, in {result.dimensions:,} dimensions. A consistent signal of "
        f"{SIGNAL_SHARE:g} clipping norms a step reaches the federation's noise after "
        f"{needed:,} steps and ends {ratio:.2g} times it: {meaning}"
    )
