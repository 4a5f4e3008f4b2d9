"""Exact per-sample gradients for every trainable parameter, summed and clipped per privacy unit.

A forward hook on each module that owns trainable parameters (the LoRA matrices, the merger's
linear and layer-norm layers) routes the module's output through a tap: an identity autograd
function that saves the module's input with ``save_for_backward`` and, in its backward, hands
input and output gradient to Opacus's registered grad sampler
(``GradSampleModule.GRAD_SAMPLERS``), which sums over every dimension between the batch and the
features. Because the input is an autograd saved tensor, gradient checkpointing treats it like
any other: dropped after the forward, recomputed before the backward, and the tap's backward
runs once per forward call whatever the recomputation did (a recomputed forward builds a graph
nobody differentiates). Per-sample gradients with and without checkpointing are the same.

On the language-model side activations are ``(batch, tokens, features)``: the batch dimension is
explicit. Qwen2-VL's vision tower flattens the patches of every image (one call) or every video
(another call) of a batch into one ``(rows, features)`` sequence, so a tap there sees patches,
not samples. A pre-hook on the tower records, per call, how many patches each sample brought
(from ``grid_thw`` and which sample owns each grid); the tap then scatters the rows into a
zero-padded ``(batch, most_rows, features)`` tensor, whose zero rows add nothing to a linear
layer's gradient. Samples of different patch grids (a radiograph and a CT series) share a
micro-batch exactly.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

import torch
from opacus.grad_sample import GradSampleModule
from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
from torch import nn

from client.privacy.subspace import GradientSubspace
from shared_model.readout_map import rows_parameter

VISION_PREFIX = "visual."
VISION_TOWER = "visual"


class UnsupportedLayerError(TypeError):
    """A trainable layer has no per-sample gradient rule; DP training would be wrong."""


def vision_owners(examples: Sequence) -> list[torch.Tensor]:
    """Per vision-tower call of a collated batch (images first, then videos, as Qwen2-VL calls
    them), the sample that owns each ``grid_thw`` row."""
    calls = []
    for key in ("image_grid_thw", "video_grid_thw"):
        owners = [
            position
            for position, example in enumerate(examples)
            if getattr(example, key) is not None
            for _ in range(len(getattr(example, key)))
        ]
        if owners:
            calls.append(torch.tensor(owners, dtype=torch.long))
    return calls


class PerSampleGradients:
    """Collect per-sample gradients of ``model``'s trainable parameters during backward.

    Use :meth:`capture` around one forward and backward of a micro-batch; afterwards
    :attr:`grad_samples` maps each trainable parameter to a tensor of shape
    ``(batch, *param.shape)``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.grad_samples: dict[nn.Parameter, torch.Tensor] = {}
        self._batch_size = 0
        self._pending_calls: list[torch.Tensor] = []
        self._rows: torch.Tensor | None = None  # patches per sample in the current vision call
        self._handles = []
        self.parameters: list[nn.Parameter] = []
        claimed: set[nn.Parameter] = set()
        for name, module in model.named_modules():
            if name.endswith(VISION_TOWER) and name.split(".")[-1] == VISION_TOWER:
                self._handles.append(
                    module.register_forward_pre_hook(self._vision_call, with_kwargs=True)
                )
            if isinstance(module, TrainableTokensLayer):
                own = [p for p in module.trainable_tokens_delta.parameters() if p.requires_grad]
                sampler = _output_rows_grad_sample
            else:
                own = [p for p in module.parameters(recurse=False) if p.requires_grad]
                sampler = GradSampleModule.GRAD_SAMPLERS.get(type(module))
            own = [p for p in own if p not in claimed]
            if not own:
                continue
            claimed.update(own)
            if sampler is None:
                raise UnsupportedLayerError(
                    f"trainable layer {name!r} of type {type(module).__name__} has no "
                    f"per-sample gradient rule"
                )
            self.parameters.extend(own)
            self._handles.append(
                module.register_forward_hook(self._tap_hook(sampler, VISION_PREFIX in name))
            )

    @contextlib.contextmanager
    def capture(self, examples: Sequence) -> Iterator[None]:
        """Collect per-sample gradients of one forward/backward of ``examples`` (the encoded
        samples of the micro-batch, in row order)."""
        self.grad_samples = {}
        self._batch_size = len(examples)
        self._pending_calls = vision_owners(examples)
        try:
            yield
        finally:
            self._batch_size = 0
            self._pending_calls, self._rows = [], None

    def remove(self) -> None:
        """Detach every hook."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _vision_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not (self._batch_size and torch.is_grad_enabled()):
            return
        if not self._pending_calls:
            raise RuntimeError("more vision-tower calls than the micro-batch has image kinds")
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        owners = self._pending_calls.pop(0)
        patches = grid.prod(-1).to("cpu", torch.long)
        if len(patches) != len(owners):
            raise ValueError(f"{len(patches)} vision grids for {len(owners)} owned grids")
        self._rows = torch.zeros(self._batch_size, dtype=torch.long).index_add_(0, owners, patches)

    def _tap_hook(self, sampler, vision: bool):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor):
            if not (self._batch_size and torch.is_grad_enabled() and output.requires_grad):
                return None
            layout = self._rows if vision else None
            return _Tap.apply(output, inputs[0], (self, module, sampler, layout))

        return hook

    def _collect(self, module, sampler, layout, activation, backprop) -> None:
        dtype = next(p for p in module.parameters() if p.requires_grad).dtype
        activation, backprop = activation.to(dtype), backprop.to(dtype)
        if layout is not None:
            activation, backprop = (
                self._per_sample_rows(t, layout) for t in (activation, backprop)
            )
        for parameter, grad in sampler(module, [activation], backprop).items():
            if parameter in self.grad_samples:
                self.grad_samples[parameter] = self.grad_samples[parameter] + grad
            else:
                self.grad_samples[parameter] = grad

    @staticmethod
    def _per_sample_rows(tensor: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """``(rows, ...)`` of one vision call as ``(batch, most_rows, ...)``, zero-padded."""
        total, rows = int(patches.sum()), tensor.shape[0]
        per_sample = patches * rows // max(total, 1)
        if int(per_sample.sum()) != rows or bool((patches * rows % max(total, 1)).any()):
            raise ValueError(f"{rows} vision rows do not divide over samples of {patches} patches")
        owner = torch.repeat_interleave(torch.arange(len(patches)), per_sample).to(tensor.device)
        starts = torch.cumsum(per_sample, 0) - per_sample
        position = torch.arange(rows) - torch.repeat_interleave(starts, per_sample)
        padded = tensor.new_zeros(len(patches), int(per_sample.max()), *tensor.shape[1:])
        padded[owner, position.to(tensor.device)] = tensor
        return padded


def _output_rows_grad_sample(
    layer: TrainableTokensLayer, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of an output layer's trained rows (peft trainable tokens over a
    linear ``lm_head``, :mod:`shared_model.answer_rows`): row ``j`` is the weight of token
    ``ids[j]``, so its gradient is the sum over positions of that token's logit gradient
    times the layer's input (mapped, where the rows train through a map:
    :mod:`shared_model.readout_map`)."""
    if not isinstance(layer.base_layer, nn.Linear):
        raise UnsupportedLayerError(
            f"trainable rows of a {type(layer.base_layer).__name__} have no per-sample rule"
        )
    grads = {}
    for adapter in layer.active_adapters:
        ids = torch.tensor(layer.token_indices[adapter], device=backprops.device)
        parameter, mapping = rows_parameter(layer, adapter)
        inputs = activations[0] if mapping is None else activations[0] @ mapping.T
        grads[parameter] = torch.einsum("b...v,b...h->bvh", backprops.index_select(-1, ids), inputs)
    return grads


class _Tap(torch.autograd.Function):
    """Identity on a module's output whose backward computes the module's per-sample
    gradients from the saved input (recomputed under gradient checkpointing)."""

    @staticmethod
    def forward(ctx, output: torch.Tensor, activation: torch.Tensor, owner: tuple):
        ctx.save_for_backward(activation.detach())
        ctx.owner = owner
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (activation,) = ctx.saved_tensors
        collector, module, sampler, layout = ctx.owner
        collector._collect(module, sampler, layout, activation, grad.detach())
        return grad, None, None


def sum_per_unit(
    grad_samples: dict[nn.Parameter, torch.Tensor],
    unit_index: torch.Tensor,
    n_units: int,
    into: dict[nn.Parameter, torch.Tensor] | None = None,
) -> dict[nn.Parameter, torch.Tensor]:
    """Add per-sample gradients into per-unit sums ``(n_units, *shape)`` (row ``i`` -> unit)."""
    into = {} if into is None else into
    for parameter, grads in grad_samples.items():
        if parameter not in into:
            dtype = torch.promote_types(grads.dtype, torch.float32)
            into[parameter] = torch.zeros(
                (n_units, *grads.shape[1:]), dtype=dtype, device=grads.device
            )
        target = into[parameter]
        target.index_add_(0, unit_index.to(grads.device), grads.to(target.dtype))
    return into


def clip_and_sum(
    unit_grads: dict[nn.Parameter, torch.Tensor],
    max_norm: float,
    groups: Mapping[nn.Parameter, int] | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[dict[nn.Parameter, torch.Tensor], torch.Tensor]:
    """Clip each unit's gradient to ``max_norm`` over all parameters together, then sum.

    With ``groups`` (a parameter's clip group, ``0 .. G-1``), each unit's gradient is clipped
    group by group to ``max_norm / sqrt(G)`` instead, so its whole clipped gradient still has
    norm at most ``max_norm``. With ``weights`` (one a unit, in ``(0, 1]``), each clipped
    gradient is multiplied by its unit's weight before the sum, so the bound holds as well
    (:mod:`client.privacy.answer_prior`). Returns the summed clipped gradient per parameter and
    each unit's norm before clipping (over all parameters).
    """
    group_of = {} if groups is None else groups
    count = 1 + max(group_of.values(), default=0)
    squares = {p: g.flatten(1).pow(2).sum(1) for p, g in unit_grads.items()}
    first = next(iter(squares.values()))
    group_squares = first.new_zeros((count, first.shape[0]))
    for parameter, square in squares.items():
        group_squares[group_of.get(parameter, 0)] += square
    bound = max_norm / math.sqrt(count)
    factors = (bound / (group_squares.sqrt() + 1e-6)).clamp(max=1.0)
    if weights is not None:
        if not bool(((weights > 0) & (weights <= 1)).all()):
            raise ValueError("unit weights must lie in (0, 1]: a larger one would exceed the norm")
        factors = factors * weights.to(factors)
    summed = {
        p: torch.einsum("u,u...->...", factors[group_of.get(p, 0)], g)
        for p, g in unit_grads.items()
    }
    norms = group_squares.sum(0).sqrt()
    return summed, norms


class StreamingClipper:
    """Per-unit clipping that keeps one running sum, not one gradient per unit of the step.

    :meth:`add` takes a micro-batch's per-sample gradients; every unit whose last record was in
    it is clipped and added to :attr:`total` at once, so memory holds the micro-batch's
    per-sample gradients, the running sum and only the units whose records are still to come
    (none when each unit brings one record a step, the default).

    With a ``subspace``, each finished unit's gradient is projected onto it first and its
    coordinates are clipped: :attr:`total` then maps the subspace to the summed ``(k,)``
    coordinates. With ``unit_weights`` (a weight in ``(0, 1]`` for every unit slot), each
    clipped gradient is weighted before it is added (:func:`clip_and_sum`).
    """

    def __init__(
        self,
        unit_slots: Sequence[torch.Tensor],
        max_norm: float,
        groups: Mapping[nn.Parameter, int] | None = None,
        subspace: GradientSubspace | None = None,
        unit_weights: Mapping[int, float] | None = None,
    ) -> None:
        if groups is not None and subspace is not None:
            raise ValueError("clip groups and a gradient subspace do not combine")
        self.max_norm = max_norm
        self.groups = groups
        self.subspace = subspace
        self.unit_weights = unit_weights
        self._remaining = Counter(slot for slots in unit_slots for slot in slots.tolist())
        self._open: dict[int, dict[nn.Parameter, torch.Tensor]] = {}
        self.total: dict[nn.Parameter, torch.Tensor] = {}
        self.norms: list[float] = []

    def add(self, grad_samples: dict[nn.Parameter, torch.Tensor], unit_slots: torch.Tensor) -> None:
        """Add one micro-batch (row ``i`` belongs to unit ``unit_slots[i]``)."""
        slots = unit_slots.tolist()
        units = sorted(set(slots))
        local = torch.tensor([units.index(slot) for slot in slots], dtype=torch.long)
        sums = sum_per_unit(grad_samples, local, len(units))
        self._remaining.subtract(slots)
        done = []
        for row, slot in enumerate(units):
            for parameter, partial in self._open.pop(slot, {}).items():
                sums.setdefault(parameter, partial.new_zeros((len(units), *partial.shape)))
                sums[parameter][row] += partial
            if self._remaining[slot] == 0:
                done.append(row)
            else:
                self._open[slot] = {p: g[row].clone() for p, g in sums.items()}
        if not done:
            return
        rows = torch.tensor(done, dtype=torch.long)
        finished = {p: g[rows] for p, g in sums.items()}
        if self.subspace is not None:
            finished = {self.subspace: self.subspace.project(finished)}
        weights = (
            None
            if self.unit_weights is None
            else torch.tensor([self.unit_weights[units[row]] for row in done], dtype=torch.float64)
        )
        clipped, norms = clip_and_sum(finished, self.max_norm, self.groups, weights)
        self.norms.extend(norms.tolist())
        for parameter, summed in clipped.items():
            if parameter in self.total:
                self.total[parameter] += summed
            else:
                self.total[parameter] = summed
