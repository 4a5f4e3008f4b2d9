"""One hospital inside one process: its config, model spec, samples and models.

Flower may call the ClientApp many times in one process; everything expensive (reading the
archive, loading the base, merging the stage-1 adapter) happens once and is kept here.
The base with a given stage-1 adapter merged in is also cached on disk in the site's work
folder, keyed by fingerprint and adapter hash, so it is merged once per site, not per round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import Qwen2VLForConditionalGeneration

from client.audit import AuditLog
from client.config import SiteConfig, SiteConfigError, load_site_config
from client.privacy.answer_prior import AnswerCountsStore
from client.privacy.contrast import public_controls, public_pairs
from client.privacy.ledger import PrivacyLedger
from client.privacy.randomness import SiteRandomness
from client.privacy.subspace import GradientSubspace
from client.records import site_logger
from client.stage1 import DERIVED_SUFFIX, stage1_samples
from client.stage1_store import Stage1Store
from client.trainer import LocalTrainer, TrainConfig
from protocol import arrays_hash
from shared_model.adapters import StageAdapter
from shared_model.device import configure_cpu_threads, resolve_device, weights_dtype
from shared_model.loading import load_base, merge_stage
from shared_model.sample import Sample
from shared_model.spec import ModelSpec
from shared_model.tasks import STAGE_TASKS

if TYPE_CHECKING:
    from client.archive import Problem

log = logging.getLogger(__name__)


class Site:
    """A site's long-lived state.

    Parameters
    ----------
    config:
        The validated site config; its ``[model] spec`` names the model spec TOML.
    progress:
        Show progress bars (training, archive reading).
    """

    def __init__(self, config: SiteConfig, progress: bool = True) -> None:
        if config.model_spec is None:
            raise SiteConfigError(config.path, "model.spec", "missing: the model spec TOML to use")
        self.config, self.progress = config, progress
        self.spec = ModelSpec.from_toml(config.model_spec)
        self.fingerprint = self.spec.fingerprint()
        self.device = resolve_device(config.device)
        if self.device.type == "cpu":
            configure_cpu_threads()  # in a simulation's worker process too
        self._samples: dict[str, list[Sample]] = {}
        self._public: dict[tuple[str, str], list[Sample]] = {}
        self._trainers: dict[tuple[str, str], LocalTrainer] = {}
        self._unfit: set[tuple[str, str]] = set()  # (source, record id) already reported
        self.stage1_store = Stage1Store(config.work_dir / "stage1")  # frozen global align
        self.ledger = PrivacyLedger(config.ledger_path)
        self.answer_counts = AnswerCountsStore(config.work_dir / "answer_counts")
        self.audit = AuditLog(config.audit_path)
        self.log = site_logger(config)

    def randomness(self, stage: str, server_round: int) -> SiteRandomness:
        """The round's sampling and noise: secret unless the site's own config opts in to
        replayable randomness (simulations), whatever the server sends. Replayable streams are
        keyed by seed, site, stage and round only, so a run and its resumed twin (another run
        id) draw the same."""
        seed = self.config.policy.replayable_noise_seed
        if seed is None:
            return SiteRandomness.secure()
        return SiteRandomness.replayable(seed, self.config.name, stage, server_round)

    def samples(self, split: str, stage: str) -> list[Sample]:
        """Usable samples of ``split`` for the tasks of ``stage`` that the policy allows."""
        if split not in self._samples:
            self._read_splits(split)
        policy = self.config.policy
        allowed = set(STAGE_TASKS[stage]) & set(policy.tasks)
        if stage == "align":
            # captions derived from the site's other records where its archive has none
            # (policy derive_stage1), from the records of tasks the policy allows
            usable = [s for s in self._samples[split] if s.task in policy.tasks]
            return stage1_samples(usable, policy.derive_stage1, sorted(allowed))
        return [s for s in self._samples[split] if s.task in allowed]

    def encodable(
        self, trainer: LocalTrainer, samples: Sequence[Sample], section: str | None = None
    ) -> list[Sample]:
        """``samples`` the model can take, each encoded now (the trainer keeps it for the
        steps). One it cannot, such as a prompt longer than the spec's ``max_text_length``,
        would fail a whole DP step and so the round: it is skipped, and reported once in the
        site's log with its manifest line and why. ``section`` names the config section of a
        public archive the samples come from (``subspace``); ``None``: the site's own."""
        source = "site" if section is None else "public"
        usable, unfit = trainer.encodable(samples, source)
        new = {r: reason for r, reason in unfit.items() if (source, r) not in self._unfit}
        if new:
            self._unfit.update((source, record) for record in new)
            self.log.warning("%d records skipped: the model cannot take them", len(new))
            config = self.config if section is None else self.config.public_archive_config(section)
            for problem in unfit_problems(new, config.archive):
                self.log.warning(
                    "record %s (line %d, %s): %s",
                    problem.record_id,
                    problem.line,
                    problem.file,
                    problem.reason,
                )
        return usable

    def _read_splits(self, split: str) -> None:
        """Read ``split`` and every other split the site may use (training and the policy's
        evaluation splits) not read yet, in one pass over the manifest."""
        from client.archive import load_site_samples

        splits = dict.fromkeys((split, "train", *self.config.policy.eval_splits))
        wanted = [name for name in splits if name not in self._samples]
        samples, report = load_site_samples(
            self.config,
            canvas=self.spec.canvas,
            slices=self.spec.volume_slices,
            splits=wanted,
            progress=self.progress,
        )
        if report.problems:
            log.warning(
                "%s: %d records skipped (see `fedumit site check`)",
                self.config.name,
                len(report.problems),
            )
        for name in wanted:
            self._samples[name] = [s for s in samples if s.split == name]

    def public_subspace(
        self, trainer: LocalTrainer, config: TrainConfig
    ) -> GradientSubspace | None:
        """The round's gradient subspace (``[subspace]`` of the site config), from public
        records only and the trainer's current (global) adapter; ``None`` without the section
        or without a public record of the trainer's stage."""
        settings = self.config.subspace
        if settings is None:
            return None
        records = self._public_records("subspace", trainer.adapter.stage)
        records = self.encodable(trainer, records, section="subspace")
        if not records:
            self.log.info("no public %s records: noise on every parameter", trainer.adapter.stage)
            return None
        controls = public_pairs(records) if self.config.contrast is not None else None
        return trainer.gradient_subspace(
            records, settings.directions, config, settings.by_task, controls
        )

    def controls(self, samples: Sequence[Sample], stage: str) -> list[Sample | None] | None:
        """Each sample's control over a public image (``[contrast]`` of the site config,
        :mod:`client.privacy.contrast`); ``None`` without the section."""
        if self.config.contrast is None:
            return None
        controls = public_controls(self._public_records("contrast", stage), samples)
        if not any(controls):
            self.log.info("no public image of the %s records' shapes: no contrast", stage)
            return None
        return controls

    def _public_records(self, section: str, stage: str) -> list[Sample]:
        if (section, stage) not in self._public:
            self._public[section, stage] = public_records(
                self.config, self.spec, stage, self.progress, section
            )
        return self._public[section, stage]

    def unit_keys(self, samples: list[Sample]) -> list[str]:
        """The privacy unit of each sample: its patient, or the record itself."""
        if self.config.policy.privacy_unit == "record":
            return [s.record_id for s in samples]
        return [s.patient_id for s in samples]

    def trainer(
        self, stage: str, align_arrays: Mapping[str, np.ndarray] | None = None
    ) -> LocalTrainer:
        """The trainer of ``stage``; ``instruct`` trains over the base with ``align`` merged."""
        key = (stage, arrays_hash(align_arrays) if align_arrays is not None else "")
        if key not in self._trainers:
            model, processor = self._base_for(stage, align_arrays, key[1])
            adapter = StageAdapter.attach(model, self.spec, stage, fingerprint=self.fingerprint)
            self._trainers = {key: LocalTrainer(adapter, processor, self.spec, self.device)}
        return self._trainers[key]

    def _base_for(self, stage: str, align_arrays, align_hash: str):
        dtype = weights_dtype(self.device, self.config.precision)
        model, processor = load_base(self.spec, dtype=dtype)
        if stage != "instruct" or align_arrays is None:
            return model, processor
        cached = self.config.work_dir / "merged" / f"{self.fingerprint}-{align_hash}"
        if (cached / "config.json").is_file():
            log.info("%s: using cached stage-1 merge %s", self.config.name, cached.name)
            merged = Qwen2VLForConditionalGeneration.from_pretrained(cached, dtype=dtype)
            return merged.eval(), processor
        merged = merge_stage(model, self.spec, "align", align_arrays, self.fingerprint)
        _save_atomically(merged, cached)
        return merged, processor


def public_records(
    config: SiteConfig,
    spec: ModelSpec,
    stage: str,
    progress: bool = False,
    section: str = "subspace",
) -> list[Sample]:
    """Up to ``[section] records`` records of the public archive ``section`` (``subspace`` or
    ``contrast``) names, for ``stage`` (every split: all of them are public), spread evenly
    over its records in id order; stage-1 captions derived as the site's policy derives its
    own."""
    from client.archive import load_site_samples

    settings = getattr(config, section)
    if settings is None:
        return []
    loaded, _ = load_site_samples(
        config.public_archive_config(section),
        canvas=spec.canvas,
        slices=spec.volume_slices,
        progress=progress,
    )
    allowed = sorted(STAGE_TASKS[stage])
    if stage == "align":
        usable = stage1_samples(loaded, config.policy.derive_stage1, allowed)
    else:
        usable = [s for s in loaded if s.task in allowed]
    usable.sort(key=lambda s: s.record_id)
    stride = max(1.0, len(usable) / settings.records)
    return [usable[int(i * stride)] for i in range(min(len(usable), settings.records))]


def unfit_problems(unfit: Mapping[str, str], archive: Path) -> list[Problem]:
    """A :class:`Problem` for each record id of ``unfit`` (with its reason), at its line of
    ``archive``'s manifest; a caption derived from a record points at that record's line."""
    from client.archive import MANIFEST, Problem, read_manifest

    lines = {record.record_id: record.line for record in read_manifest(archive)[0]}
    return [
        Problem(record, lines.get(record.removesuffix(DERIVED_SUFFIX), 0), MANIFEST, reason)
        for record, reason in unfit.items()
    ]


def _save_atomically(model: torch.nn.Module, directory: Path) -> None:
    """Write a merged model to ``directory`` via a temporary sibling and a rename."""
    temporary = directory.with_name(directory.name + ".tmp")
    model.save_pretrained(temporary)
    temporary.replace(directory)


@cache
def site_for(config_path: str) -> Site:
    """The process-wide :class:`Site` of a site config file (built on first use)."""
    return Site(load_site_config(Path(config_path)))
