"""Output rows that train through a fixed map of their input: whitened answer positions.

Where the language model writes an answer token, its final hidden state ``h`` is almost all
one direction that every record shares: on the tiny base, for PneumoniaMNIST's question, the
mean state has norm 14.4 and a record's distance from it is 0.6. A trained output row's
per-record gradient is ``(p - y) h``, so under DP-SGD's clipping nearly all of each record's
clipped norm goes to that shared direction, which moves every answer's logit alike, and the
image's part drowns in the noise (``benchmarks/readout_probe.py``).

Training the rows ``R`` as ``R = R0 + V M`` instead, with ``V`` the trained change and ``M``
a fixed map that removes the shared direction and whitens the rest, makes each record's
gradient ``(p - y) (M h)``: the records' differences, each direction at its own scale. A
checkpoint still holds plain rows (``R0 + V M``), so nothing changes at inference, in the
exchange or in a merge. ``M`` must not depend on a site's records: it comes from public
records, and per-sample gradients stay exact (:mod:`client.privacy.per_unit`).

Measured, and not a site setting yet (``benchmarks/readout_probe.py``,
``benchmarks/dp_learning.py --readout-map``; the README gives the numbers): on the frozen base a
DP readout of the lesion class through the whitening map, found on public images under the
task's prompt, reaches 0.95 test accuracy at the main job's noise where the rows' own
coordinates reach 0.48. In the whole model the rows are shared by every task's answer tokens,
and at the rate that lets the closed answers learn, the boxes' digits lose their format.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
from torch import nn
from torch.nn.utils import parametrize

EIGENVALUE_FLOOR = 1e-3
"""Whitening's floor, as a share of the largest eigenvalue: directions the public records
barely vary in are not blown up by more than ``1 / sqrt(floor)`` of the largest's scale."""


class RowsThroughMap(nn.Module):
    """The parametrization ``R = R0 + (X - R0) M`` of trained rows ``X`` that start at ``R0``."""

    def __init__(self, start: torch.Tensor, mapping: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("start", start.detach().clone())
        self.register_buffer("mapping", mapping.to(start))

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return self.start + (stored - self.start) @ self.mapping


def whitening_map(hidden: torch.Tensor, floor: float = EIGENVALUE_FLOOR) -> torch.Tensor:
    """The map that removes the mean direction of ``hidden`` (one state a row) and whitens
    what is left (eigenvalues floored at ``floor`` times the largest)."""
    if hidden.ndim != 2 or len(hidden) < 2:
        raise ValueError(f"need at least two hidden states, one a row; got {tuple(hidden.shape)}")
    hidden = hidden.double()
    mean = hidden.mean(0)
    direction = mean / mean.norm()
    projection = torch.eye(hidden.shape[1], dtype=hidden.dtype) - torch.outer(direction, direction)
    values, vectors = torch.linalg.eigh(torch.cov((hidden @ projection).T))
    scale = (values.clamp(min=0) + floor * values.max()).rsqrt()
    return ((vectors * scale).T @ projection).float()


def rows_parameter(
    layer: TrainableTokensLayer, adapter: str
) -> tuple[nn.Parameter, torch.Tensor | None]:
    """The stored parameter of ``layer``'s rows for ``adapter`` and the map they train
    through (``None`` when they train as themselves)."""
    rows = layer.trainable_tokens_delta
    if parametrize.is_parametrized(rows, adapter):
        chain = rows.parametrizations[adapter]
        return chain.original, chain[0].mapping
    return rows[adapter], None


@contextlib.contextmanager
def rows_through(model: nn.Module, mapping: torch.Tensor) -> Iterator[None]:
    """Train every trainable output row of ``model`` through ``mapping`` inside the block,
    starting from their current values; afterwards they are plain rows again, ``R0 + V M``."""
    chosen = {
        (id(module.trainable_tokens_delta), adapter): (module.trainable_tokens_delta, adapter)
        for module in model.modules()
        if isinstance(module, TrainableTokensLayer)
        for adapter in module.active_adapters
        if adapter in module.trainable_tokens_delta
        and module.trainable_tokens_delta[adapter].requires_grad
    }.values()
    if not chosen:
        raise ValueError("the model has no trainable output rows to train through a map")
    for rows, adapter in chosen:
        parametrize.register_parametrization(
            rows, adapter, RowsThroughMap(rows[adapter], mapping), unsafe=True
        )
    try:
        yield
    finally:
        for rows, adapter in chosen:
            parametrize.remove_parametrizations(rows, adapter, leave_parametrized=True)
