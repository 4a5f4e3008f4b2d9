"""The tiny base's second pretraining phase: the medical tasks, on a public archive.

A real Qwen2-VL-2B-Instruct base has been trained on public medical images and on instructions
of every kind before a consortium fine-tunes it; what a federation then adds is its hospitals'
own images. This phase gives the tiny base that starting point: the tasks of both stages
(captions and comparisons, and the five instruction tasks), in both languages and with the
tasks' own prompts, over a public archive of chest radiographs and CT volumes. The archive is
imaged by another scanner than the hospitals' (a wider field of view and twice the noise,
:data:`simulations.phantoms.PUBLIC_SCANNER`), as public data is, and is written as DICOM and
NIfTI files and read back by the sites' own archive reader, so the base sees its pixels exactly
as a site would.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from shared_model.inputs import Encoded, encode_sample
from shared_model.spec import ModelSpec
from shared_model.tasks import STAGE_TASKS

PUBLIC_ARCHIVE_SEED = 101
"""Keys the pretraining archive apart from every hospital's and from the subspace and contrast
archives (``simulations.synthetic.generate_public_archive``)."""


def public_examples(spec: ModelSpec, processor, patients: int) -> list[Encoded]:
    """Every record of a public archive of ``patients`` patients, of both stages' tasks,
    encoded with the tasks' templates as a site encodes its own."""
    from client.archive import load_site_samples
    from client.config import SiteConfig
    from simulations.phantoms import PUBLIC_SCANNER
    from simulations.synthetic import generate_public_archive

    with tempfile.TemporaryDirectory(prefix="fedumit-public-") as scratch:
        archive = generate_public_archive(
            Path(scratch) / "archive", patients, PUBLIC_ARCHIVE_SEED, PUBLIC_SCANNER
        )
        config = SiteConfig(
            path=archive / "manifest.jsonl",
            name="public pretraining archive",
            archive=archive,
            work_dir=Path(scratch) / "work",
        )
        samples, _ = load_site_samples(
            config,
            canvas=spec.canvas,
            slices=spec.volume_slices,
            tasks=[task for stage in ("align", "instruct") for task in STAGE_TASKS[stage]],
        )
    return [encode_sample(processor, sample, spec) for sample in samples]


def public_batches(examples: list[Encoded], batch: int, seed: int):
    """A step's examples: ``batch`` of ``examples`` drawn at random, without replacement."""
    rng = random.Random(seed)
    return lambda step: rng.sample(examples, batch)
