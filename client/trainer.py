"""Local training of one stage on one site's samples, with or without DP-SGD.

No Flower in here: model, samples and a config in; updated adapter arrays and numbers out.

DP-SGD per logical step (the privacy unit is a patient by default):
Poisson-sample units with rate ``q``; compute each sampled unit's gradient exactly (the sum of
its records' per-sample gradients, each record's loss being the mean over its answer tokens);
clip every unit's gradient to ``C`` over all trainable parameters together (or, where the stage's
layout names ``clip_groups``, each of its ``G`` groups to ``C / sqrt(G)``, which bounds the whole
to ``C`` as well); add Gaussian noise of standard deviation ``sigma * C``; divide by the expected
number of units ``q * N``; take an AdamW step. A step that sampled no unit still adds noise, as
Opacus does.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm
from transformers import ProcessorMixin

from client.batching import MicroBatch, Step, UnitIndex, pack, sample_step
from client.privacy.per_unit import PerSampleGradients, StreamingClipper
from client.privacy.randomness import SiteRandomness
from client.privacy.subspace import GradientSubspace, top_directions
from shared_model.adapters import StageAdapter
from shared_model.answer_rows import ROWS_MARKER
from shared_model.device import autocast, weights_dtype
from shared_model.inputs import Encoded, collate, encode_sample
from shared_model.loss import answer_token_loss, answer_window
from shared_model.readout_map import rows_through, whitening_map
from shared_model.sample import Sample
from shared_model.spec import ModelSpec

OPTIMIZERS = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
LORA_MARKER = "lora_"

RecordSource = Literal["site", "public", "control"]
"""Where an encoded record comes from: the site's archive, a public archive (gradient
directions, readout maps), or a contrast control (a site record's prompt over a public image)."""


@dataclass(frozen=True)
class TrainConfig:
    """How one round of local training runs.

    Parameters
    ----------
    steps:
        Logical steps this round.
    sample_rate:
        Poisson rate ``q`` per unit and step.
    learning_rate:
        AdamW learning rate.
    dp:
        Clip and noise (DP-SGD); without it, the plain mean gradient of the sampled records.
    noise_multiplier, max_grad_norm:
        ``sigma`` and ``C``.
    physical_batch_size:
        Most rows per forward pass (gradient accumulation beyond it).
    token_budget:
        Most tokens per forward pass, rows times the longest row's tokens, visual tokens
        included (:func:`client.batching.pack`): what bounds a micro-batch's activation memory.
    precision:
        ``auto``: the frozen base in bfloat16 on a GPU that has it (the adapter stays float32);
        ``float32``: everything in float32 (:func:`shared_model.device.weights_dtype`).
    gradient_checkpointing:
        Recompute each decoder layer's and vision block's activations in the backward pass
        instead of keeping them: far less activation memory for about a third more time.
        Per-sample gradients are the same with and without it.
    max_records_per_unit:
        Most records a sampled unit contributes to one step, drawn at random (default one: the
        unit's gradient is clipped, so a second record of the same patient doubles the step's
        cost for a quarter more signal; measured in :mod:`simulations.defaults`).
    projector_lr_scale:
        The patch merger's learning rate as a fraction of ``learning_rate``. LoRA matrices start
        at zero and take large steps well; the merger is a full pretrained weight (entries of
        about 0.02 on the tiny base), which AdamW at a LoRA learning rate would overwrite within
        a few steps, and under DP noise would random-walk away from.
    rows_lr_scale:
        The trained output rows' learning rate (:mod:`shared_model.answer_rows`) as a multiple
        of ``learning_rate``.
    proximal_mu:
        FedProx proximal term weight (0 = off).
    control_weight:
        With controls (:meth:`LocalTrainer.train`), each sampled record's loss minus this
        multiple of its control's loss, in the record's unit (0 = off).
    optimizer:
        ``adamw`` or ``sgd``.
    """

    steps: int
    sample_rate: float
    learning_rate: float = 1e-3
    dp: bool = True
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    physical_batch_size: int = 16
    token_budget: int = 16384
    gradient_checkpointing: bool = False
    precision: str = "auto"
    max_records_per_unit: int = 1
    projector_lr_scale: float = 0.02
    rows_lr_scale: float = 1.0
    proximal_mu: float = 0.0
    control_weight: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        if self.steps < 0 or not 0.0 < self.sample_rate <= 1.0:
            raise ValueError(f"need steps >= 0 and 0 < sample_rate <= 1, got {self}")
        if self.dp and (self.noise_multiplier < 0 or self.max_grad_norm <= 0):
            raise ValueError("DP needs noise_multiplier >= 0 and max_grad_norm > 0")
        if not 0.0 <= self.projector_lr_scale <= 1.0:
            raise ValueError(f"projector_lr_scale must be in [0, 1], got {self.projector_lr_scale}")
        if self.rows_lr_scale <= 0.0:
            raise ValueError(f"rows_lr_scale must be positive, got {self.rows_lr_scale}")
        if self.physical_batch_size < 1 or self.token_budget < 1:
            raise ValueError("physical_batch_size and token_budget must be positive")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {sorted(OPTIMIZERS)}")


@dataclass(frozen=True)
class TrainResult:
    """What a round of local training produced."""

    arrays: dict[str, np.ndarray]
    num_examples: int
    loss: float
    steps: int
    seconds: float


def steps_for_epochs(epochs: float, sample_rate: float) -> int:
    """Logical steps that visit each unit ``epochs`` times in expectation."""
    return max(1, math.ceil(epochs / sample_rate))


def parameter_groups(
    named: Sequence[tuple[str, torch.nn.Parameter]], config: TrainConfig
) -> list[dict]:
    """Optimizer groups: LoRA matrices at the round's learning rate, trained output rows
    (:mod:`shared_model.answer_rows`) at ``rows_lr_scale`` times it (at it by default), the
    rest (the merger) at ``projector_lr_scale`` times it."""
    scale_of = {"lora": 1.0, "rows": config.rows_lr_scale, "projector": config.projector_lr_scale}
    by_scale: dict[float, list[torch.nn.Parameter]] = {}
    for name, parameter in named:
        kind = "lora" if LORA_MARKER in name else "rows" if ROWS_MARKER in name else "projector"
        by_scale.setdefault(scale_of[kind], []).append(parameter)
    ordered = sorted(by_scale.items(), key=lambda item: item[0] != 1.0)  # the round's rate first
    return [
        {"params": parameters, **({} if scale == 1.0 else {"lr": config.learning_rate * scale})}
        for scale, parameters in ordered
    ]


def clip_group_index(
    named: Sequence[tuple[str, torch.nn.Parameter]], patterns: Sequence[str]
) -> dict[torch.nn.Parameter, int] | None:
    """Each parameter's clip group: the first of ``patterns`` its name matches (``re.search``),
    the unmatched ones last, groups without a parameter dropped; ``None`` for a single group."""
    found = [
        next((i for i, pattern in enumerate(patterns) if re.search(pattern, name)), len(patterns))
        for name, _ in named
    ]
    dense = {group: rank for rank, group in enumerate(sorted(set(found)))}
    if len(dense) < 2:
        return None
    return {parameter: dense[group] for (_, parameter), group in zip(named, found, strict=True)}


class LocalTrainer:
    """Trains a stage adapter on a site's samples; encodes each sample once per process."""

    def __init__(
        self,
        adapter: StageAdapter,
        processor: ProcessorMixin,
        spec: ModelSpec,
        device: torch.device,
    ) -> None:
        self.adapter, self.processor, self.spec, self.device = adapter, processor, spec, device
        self.clip_groups = clip_group_index(
            adapter.trainable_parameters(), spec.stage(adapter.stage).clip_groups
        )
        self._encoded: dict[tuple[RecordSource, str], Encoded] = {}

    def encode(self, samples: Sequence[Sample], source: RecordSource = "site") -> list[Encoded]:
        """Processor outputs per sample, cached by ``source`` and record id: ids are unique
        within one archive only, and a public record must never take the place of a site's
        record of the same id (or the other way round)."""
        for sample in samples:
            if (source, sample.record_id) not in self._encoded:
                encoded = encode_sample(self.processor, sample, self.spec)
                self._encoded[source, sample.record_id] = encoded
        return [self._encoded[source, s.record_id] for s in samples]

    def encodable(
        self, samples: Sequence[Sample], source: RecordSource = "site"
    ) -> tuple[list[Sample], dict[str, str]]:
        """``samples`` that encode (kept for the steps) and, by record id, why each of the
        others does not (a prompt longer than the spec's ``max_text_length``)."""
        usable, unfit = [], {}
        for sample in samples:
            try:
                self.encode([sample], source)
            except ValueError as error:
                unfit[sample.record_id] = str(error)
            else:
                usable.append(sample)
        return usable, unfit

    def preload(self, encoded: Mapping[str, Encoded]) -> None:
        """Site records already encoded, by record id (a benchmark's synthetic records)."""
        self._encoded.update({("site", record): value for record, value in encoded.items()})

    def record_gradients(
        self, samples: Sequence[Sample], config: TrainConfig, source: RecordSource = "site"
    ) -> torch.Tensor:
        """Each sample's exact gradient of its answer loss at the current adapter, flattened
        over the trainable parameters in order: ``(len(samples), d)``, float32 on the CPU.
        Micro-batches are packed within the config's row and token limits, as a step's are."""
        encoded = _LazyEncoded(self, samples, source=source)
        model = self._training_model(config)
        parameters = [p for _, p in self.adapter.trainable_parameters()]
        rows = [(len(encoded[i].input_ids), i, i) for i in range(len(samples))]
        out = torch.zeros(len(samples), sum(p.numel() for p in parameters))
        hooks = PerSampleGradients(model)
        try:
            for chunk in pack(rows, config.physical_batch_size, config.token_budget):
                positions = [record for _, record, _ in chunk]
                examples = [encoded[i] for i in positions]
                with hooks.capture(examples):
                    self.answer_losses(examples).sum().backward()
                out[positions] = torch.cat(
                    [
                        hooks.grad_samples[p].flatten(1).float().cpu()
                        if p in hooks.grad_samples
                        else torch.zeros(len(positions), p.numel())
                        for p in parameters
                    ],
                    dim=1,
                )
                hooks.grad_samples = {}
        finally:
            hooks.remove()
            for parameter in parameters:
                parameter.grad = None
            model.eval()
        return out

    def gradient_subspace(
        self,
        records: Sequence[Sample],
        directions: int,
        config: TrainConfig,
        by_task: bool = True,
        controls: Sequence[Sample | None] | None = None,
    ) -> GradientSubspace:
        """The leading ``directions`` of ``records``' gradients at the current adapter
        (:func:`~client.privacy.subspace.top_directions`; ``by_task``, an equal share for each
        task), as the subspace a DP round clips and noises in. ``records`` must be public.

        With ``controls`` (public too, one per record or ``None``) and ``config``'s
        ``control_weight``, each record's gradient is the contrasted one a round clips: its own
        minus the weight times its control's."""
        gradients = self.record_gradients(records, config, source="public")
        paired = [i for i, control in enumerate(controls or ()) if control is not None]
        if paired and config.control_weight:
            pairs = [controls[i] for i in paired]
            control_gradients = self.record_gradients(pairs, config, source="public")
            gradients[paired] -= config.control_weight * control_gradients
        groups = [record.task for record in records] if by_task else None
        basis = top_directions(gradients, min(directions, len(records)), groups)
        return GradientSubspace([p for _, p in self.adapter.trainable_parameters()], basis)

    def answer_states(
        self, records: Sequence[Sample], batch: int = 16, source: RecordSource = "site"
    ) -> torch.Tensor:
        """The final hidden state (the output layer's input) at every position where one of
        ``records``' answer tokens is written, under the current adapter: ``(positions, H)``."""
        model = self.adapter.model.eval()
        device = next(model.parameters()).device
        encoded = self.encode(records, source)
        states = []
        for start in range(0, len(encoded), batch):
            inputs = collate(encoded[start : start + batch], self.processor.tokenizer.pad_token_id)
            inputs = inputs.to(device).inputs
            labels = inputs.pop("labels")
            with torch.no_grad(), autocast(device):
                hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]
            writes = labels[:, 1:] != -100
            states.append(hidden[:, :-1][writes].float().cpu())
        return torch.cat(states)

    def readout_map(self, records: Sequence[Sample]) -> torch.Tensor:
        """The whitening map the output rows train through this round
        (:mod:`shared_model.readout_map`), from ``records``, which must be public."""
        return whitening_map(self.answer_states(records, source="public"))

    def train(
        self,
        samples: Sequence[Sample],
        unit_keys: Sequence[str],
        config: TrainConfig,
        *,
        randomness: SiteRandomness | None = None,
        epsilon_at: Callable[[int], float] | None = None,
        subspace: GradientSubspace | None = None,
        readout_map: torch.Tensor | None = None,
        record_weights: Sequence[float] | None = None,
        controls: Sequence[Sample | None] | None = None,
        progress: bool = True,
    ) -> TrainResult:
        """Run ``config.steps`` logical steps over ``samples``; ``unit_keys`` name each one's unit.

        ``randomness`` draws the sampling and the noise (default: a fresh secure stream, so
        nobody can replay them); ``epsilon_at(steps_done)`` (optional) feeds the progress bar;
        ``subspace`` (DP only, :mod:`client.privacy.subspace`) clips and noises each step's
        gradient in a basis found on public records; ``readout_map`` (:meth:`readout_map`)
        trains the output rows through that map; ``record_weights`` (one per sample, in
        ``(0, 1]``; :mod:`client.privacy.answer_prior`) weight each sampled unit's clipped
        gradient by the mean weight of its records this step (each record's loss without DP);
        ``controls`` (one per sample, ``None`` for a sample without one;
        :mod:`client.privacy.contrast`) subtract ``config.control_weight`` times each control's
        loss from its record's, in the record's unit.
        """
        if subspace is not None and not config.dp:
            raise ValueError("a gradient subspace is a DP-SGD setting; this round has no DP")
        if record_weights is not None and len(record_weights) != len(samples):
            raise ValueError(f"{len(record_weights)} record weights for {len(samples)} samples")
        if controls is not None and len(controls) != len(samples):
            raise ValueError(f"{len(controls)} controls for {len(samples)} samples")
        start = time.perf_counter()
        encoded = _LazyEncoded(self, samples, controls if config.control_weight else None)
        index = UnitIndex.build(unit_keys)
        model = self._training_model(config)
        mapped = (
            rows_through(model, readout_map)
            if readout_map is not None
            else contextlib.nullcontext()
        )
        with mapped:
            losses = self._run_steps(
                encoded,
                index,
                model,
                config,
                randomness,
                epsilon_at,
                subspace,
                record_weights,
                progress,
            )
        return TrainResult(
            arrays=dict(self.adapter.arrays()),
            num_examples=len(samples),
            loss=float(np.mean(losses)) if losses else float("nan"),
            steps=config.steps,
            seconds=time.perf_counter() - start,
        )

    def _run_steps(
        self,
        encoded: _LazyEncoded,
        index: UnitIndex,
        model: torch.nn.Module,
        config: TrainConfig,
        randomness: SiteRandomness | None,
        epsilon_at: Callable[[int], float] | None,
        subspace: GradientSubspace | None,
        record_weights: Sequence[float] | None,
        progress: bool,
    ) -> list[float]:
        """The round's optimizer steps; returns each step's mean loss (steps that sampled no
        record have none)."""
        named = self.adapter.trainable_parameters()
        parameters = [p for _, p in named]
        anchor = [p.detach().clone() for p in parameters] if config.proximal_mu else None
        optimizer = OPTIMIZERS[config.optimizer](
            parameter_groups(named, config),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
        randomness = randomness if randomness is not None else SiteRandomness.secure()
        hooks = PerSampleGradients(model) if config.dp else None
        checkpointing = _Checkpointing(model, config.gradient_checkpointing)
        expected_units = config.sample_rate * len(index)
        # a record and its control (the same prompt and image shapes) share a forward pass
        rows_per_record = 1 if encoded.controls is None else 2
        losses = []
        bar = tqdm(range(config.steps), desc=f"{self.adapter.stage} training", disable=not progress)
        try:
            for step_number in bar:
                step = sample_step(
                    index,
                    config.sample_rate,
                    lambda record: len(encoded[record].input_ids),
                    physical_batch_size=max(1, config.physical_batch_size // rows_per_record),
                    token_budget=max(1, config.token_budget // rows_per_record),
                    max_records_per_unit=config.max_records_per_unit,
                    randomness=randomness,
                )
                loss = self._accumulate(
                    encoded,
                    step,
                    hooks,
                    parameters,
                    expected_units,
                    config,
                    randomness,
                    subspace,
                    record_weights,
                )
                if anchor is not None:
                    for parameter, start_value in zip(parameters, anchor, strict=True):
                        parameter.grad.add_(
                            parameter.detach() - start_value, alpha=config.proximal_mu
                        )
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if loss is not None:
                    losses.append(loss)
                postfix = {"loss": f"{np.mean(losses[-20:]):.3f}" if losses else "-"}
                if epsilon_at is not None:
                    postfix["eps"] = f"{epsilon_at(step_number + 1):.2f}"
                bar.set_postfix(postfix)
        finally:
            if hooks is not None:
                hooks.remove()
            checkpointing.restore()
            model.eval()
        return losses

    def _training_model(self, config: TrainConfig) -> torch.nn.Module:
        """The adapter's model on the device in training mode, its frozen base in the
        config's precision."""
        model = _frozen_in(self.adapter.model, weights_dtype(self.device, config.precision))
        return model.to(self.device).train()

    def answer_losses(self, examples: list[Encoded]) -> torch.Tensor:
        """Each example's answer loss (the mean over its answer tokens) under the current
        adapter: one forward pass of the collated examples."""
        inputs = collate(examples, self.processor.tokenizer.pad_token_id).to(self.device).inputs
        labels = inputs.pop("labels")
        window = answer_window(labels)
        with autocast(self.device):
            logits = self.adapter.model(**inputs, logits_to_keep=window).logits
        return answer_token_loss(logits, labels[:, -window:])

    def _accumulate(
        self,
        encoded: _LazyEncoded,
        step: Step,
        hooks: PerSampleGradients | None,
        parameters: list[torch.nn.Parameter],
        expected_units: float,
        config: TrainConfig,
        randomness: SiteRandomness,
        subspace: GradientSubspace | None = None,
        record_weights: Sequence[float] | None = None,
    ) -> float | None:
        """Set every trainable parameter's ``.grad`` for one logical step; return its mean loss."""
        passes = [
            encoded.with_controls(micro, config.control_weight) for micro in step.micro_batches
        ]
        clipper = (
            StreamingClipper(
                [slots for _, slots, _ in passes],
                config.max_grad_norm,
                self.clip_groups,
                subspace,
                None if record_weights is None else _unit_weights(step, record_weights),
            )
            if hooks is not None
            else None
        )
        total_loss = 0.0
        for micro, (examples, slots, signs) in zip(step.micro_batches, passes, strict=True):
            capture = hooks.capture(examples) if hooks is not None else contextlib.nullcontext()
            with capture:
                row_loss = self.answer_losses(examples)
                total_loss += row_loss.detach()[: len(micro.records)].sum().item()
                scale = 1.0 if hooks is not None else 1.0 / max(step.n_records, 1)
                row_loss = row_loss * row_loss.new_tensor(signs)
                if hooks is None and record_weights is not None:
                    row_loss[: len(micro.records)] *= row_loss.new_tensor(
                        [record_weights[i] for i in micro.records]
                    )
                (row_loss.sum() * scale).backward()
            if clipper is not None:
                clipper.add(hooks.grad_samples, slots)
                hooks.grad_samples = {}
        if clipper is not None:
            summed = clipper.total
            if subspace is not None:
                summed = subspace.lift(
                    _noisy(summed.get(subspace), subspace.dimension, config, randomness)
                )
            else:
                summed = {p: _noisy(summed.get(p), p.shape, config, randomness) for p in parameters}
            for parameter in parameters:
                parameter.grad = (summed[parameter].cpu() / expected_units).to(
                    parameter.device, parameter.dtype
                )
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        return total_loss / step.n_records if step.n_records else None


def _unit_weights(step: Step, record_weights: Sequence[float]) -> dict[int, float]:
    """Each sampled unit's weight this step: the mean weight of its records in the step."""
    by_unit: dict[int, list[float]] = {}
    for micro in step.micro_batches:
        for record, slot in zip(micro.records, micro.unit_slots.tolist(), strict=True):
            by_unit.setdefault(slot, []).append(record_weights[record])
    return {slot: float(np.mean(weights)) for slot, weights in by_unit.items()}


def _noisy(
    summed: torch.Tensor | None,
    shape: torch.Size | int,
    config: TrainConfig,
    randomness: SiteRandomness,
) -> torch.Tensor:
    """A sum of clipped unit gradients (zeros where no unit was sampled) plus
    ``N(0, (sigma C)^2)`` noise on every entry."""
    shape = torch.Size([shape]) if isinstance(shape, int) else shape
    noise = randomness.gaussian(shape, config.noise_multiplier * config.max_grad_norm)
    return noise if summed is None else summed.cpu() + noise


def _frozen_in(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast the frozen base weights to ``dtype`` in place (the adapter's matrices, trainable or
    frozen ``A``, stay float32: they travel as float32 arrays and must come back unrounded)."""
    for name, parameter in model.named_parameters():
        frozen = not parameter.requires_grad and parameter.is_floating_point()
        if frozen and LORA_MARKER not in name and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
    return model


class _Checkpointing:
    """Gradient checkpointing on the wrapped Qwen2-VL for one round, restored afterwards."""

    def __init__(self, model: torch.nn.Module, enabled: bool) -> None:
        self.base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.enabled = enabled and not self.base.is_activation_checkpointing
        if self.enabled:
            self.base.activation_checkpointing_enable({"use_reentrant": False})

    def restore(self) -> None:
        """Switch checkpointing off again if this round switched it on."""
        if self.enabled:
            self.base.activation_checkpointing_disable()


class _LazyEncoded:
    """``samples[i]`` encoded on first use (through the trainer's cache)."""

    def __init__(
        self,
        trainer: LocalTrainer,
        samples: Sequence[Sample],
        controls: Sequence[Sample | None] | None = None,
        source: RecordSource = "site",
    ) -> None:
        self.trainer, self.samples, self.controls = trainer, samples, controls
        self.source = source

    def __getitem__(self, position: int) -> Encoded:
        return self.trainer.encode([self.samples[position]], self.source)[0]

    def with_controls(
        self, micro: MicroBatch, weight: float
    ) -> tuple[list[Encoded], torch.Tensor, list[float]]:
        """A micro-batch's rows: its records, then the controls of those that have one (in
        the same unit slots), and each row's loss sign (1, or ``-weight`` for a control)."""
        examples = [self[i] for i in micro.records]
        if self.controls is None:
            return examples, micro.unit_slots, [1.0] * len(examples)
        paired = [k for k, i in enumerate(micro.records) if self.controls[i] is not None]
        controls = self.trainer.encode([self.controls[micro.records[k]] for k in paired], "control")
        slots = torch.cat([micro.unit_slots, micro.unit_slots[paired]])
        return [*examples, *controls], slots, [1.0] * len(examples) + [-weight] * len(paired)
