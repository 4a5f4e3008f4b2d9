"""Exact per-sample gradients for every trainable parameter, summed per privacy unit.

Forward and backward hooks on each module that owns trainable parameters (the LoRA matrices,
the merger's linear and layer-norm layers) hand the layer's input and output gradient to
Opacus's registered grad samplers (``GradSampleModule.GRAD_SAMPLERS``), which sum over every
dimension between the batch and the features.

On the language-model side activations are ``(batch, tokens, features)``: the batch dimension is
explicit. Qwen2-VL's vision tower flattens all patches of a batch into one ``(rows, features)``
sequence, so a hook there sees patches, not samples. When every sample in a forward has the same
patch grid (the trainer groups micro-batches by :attr:`Encoded.vision_shape`), the rows are the
samples' rows in order, and presenting them as ``(batch, rows // batch, features)`` makes the
grad sampler's sum over the middle dimension exactly the per-sample gradient.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from opacus.grad_sample import GradSampleModule
from torch import nn

VISION_PREFIX = "visual."


class UnsupportedLayerError(TypeError):
    """A trainable layer has no per-sample gradient rule; DP training would be wrong."""


class PerSampleGradients:
    """Collect per-sample gradients of ``model``'s trainable parameters during backward.

    Use :meth:`capture` around one forward and backward of a micro-batch whose samples share a
    vision patch grid; afterwards :attr:`grad_samples` maps each trainable parameter to a tensor
    of shape ``(batch, *param.shape)``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.grad_samples: dict[nn.Parameter, torch.Tensor] = {}
        self._batch_size = 0
        self._activations: dict[nn.Module, list[torch.Tensor]] = {}
        self._handles = []
        self.parameters: list[nn.Parameter] = []
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            sampler = GradSampleModule.GRAD_SAMPLERS.get(type(module))
            if sampler is None:
                raise UnsupportedLayerError(
                    f"trainable layer {name!r} of type {type(module).__name__} has no "
                    f"per-sample gradient rule"
                )
            self.parameters.extend(own)
            grouped = VISION_PREFIX in name
            self._handles.append(module.register_forward_hook(self._keep_input))
            self._handles.append(
                module.register_full_backward_hook(self._backward_hook(sampler, grouped))
            )

    @contextlib.contextmanager
    def capture(self, batch_size: int) -> Iterator[None]:
        """Collect per-sample gradients of one forward/backward of ``batch_size`` samples."""
        self.grad_samples = {}
        self._activations = {}
        self._batch_size = batch_size
        try:
            with warnings.catch_warnings():
                # The first LoRA layers see inputs that need no gradient; their hooks still fire.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                yield
        finally:
            self._batch_size = 0
            self._activations = {}

    def remove(self) -> None:
        """Detach every hook."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _keep_input(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if self._batch_size and torch.is_grad_enabled():
            self._activations.setdefault(module, []).append(inputs[0].detach())

    def _backward_hook(self, sampler, grouped: bool):
        def hook(module: nn.Module, grad_input: tuple, grad_output: tuple) -> None:
            if not self._batch_size:
                return
            activation = self._activations[module].pop()
            backprop = grad_output[0].detach()
            if grouped:
                activation, backprop = (self._per_sample_rows(t) for t in (activation, backprop))
            for parameter, grad in sampler(module, [activation], backprop).items():
                if parameter in self.grad_samples:
                    self.grad_samples[parameter] = self.grad_samples[parameter] + grad
                else:
                    self.grad_samples[parameter] = grad

        return hook

    def _per_sample_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        rows = tensor.shape[0]
        if rows % self._batch_size:
            raise ValueError(
                f"{rows} vision rows cannot be split evenly over {self._batch_size} samples: "
                f"samples of one micro-batch must share a patch grid"
            )
        return tensor.reshape(self._batch_size, rows // self._batch_size, *tensor.shape[1:])


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
    unit_grads: dict[nn.Parameter, torch.Tensor], max_norm: float
) -> tuple[dict[nn.Parameter, torch.Tensor], torch.Tensor]:
    """Clip each unit's gradient to ``max_norm`` over all parameters together, then sum.

    Returns the summed clipped gradient per parameter and each unit's norm before clipping.
    """
    squares = [g.flatten(1).pow(2).sum(1) for g in unit_grads.values()]
    norms = torch.stack(squares).sum(0).sqrt()
    factors = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    summed = {p: torch.einsum("u,u...->...", factors, g) for p, g in unit_grads.items()}
    return summed, norms
