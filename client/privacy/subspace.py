"""DP-SGD in a gradient subspace found on public records (Zhou, Wu and Banerjee 2021,
arXiv 2007.03813; Yu et al. 2021, arXiv 2102.12677).

The Gaussian noise DP-SGD adds to a step's summed gradient has norm ``sigma C sqrt(d)`` over
``d`` trainable parameters, while the clipped signal is at most ``C`` a unit: the more
parameters, the more noise. The gradients of a model fine-tuned on one kind of data lie mostly
in a few directions, and those directions can be found on *public* records of the same kind.
A site then projects each unit's gradient onto an orthonormal basis ``U`` (``d x k``) of them,
clips the ``k`` coordinates to ``C``, adds noise to the ``k`` coordinates only (norm
``sigma C sqrt(k)``) and steps along ``U`` times the noisy sum.

The guarantee is unchanged: each unit's projected, clipped contribution has norm at most ``C``
whatever ``U`` is, and ``U`` is computed from the public records and the round's global model
only, before the round touches a private record. The accountant is the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn


class GradientSubspace:
    """An orthonormal basis of the trainable parameters' flattened space, in ``parameters``
    order (each parameter's entries row-major)."""

    def __init__(self, parameters: Sequence[nn.Parameter], basis: torch.Tensor) -> None:
        sizes = [p.numel() for p in parameters]
        if basis.ndim != 2 or basis.shape[0] != sum(sizes):
            raise ValueError(
                f"basis of shape {tuple(basis.shape)} for {sum(sizes)} trainable entries"
            )
        self.parameters = list(parameters)
        self.basis = basis.to(torch.float32)
        self._sizes = sizes

    @property
    def dimension(self) -> int:
        """``k``: the number of directions, so the number of noisy coordinates a step."""
        return self.basis.shape[1]

    def project(self, unit_grads: Mapping[nn.Parameter, torch.Tensor]) -> torch.Tensor:
        """Each unit's coordinates in the basis, ``(units, k)``, from per-unit gradients of
        shape ``(units, *param.shape)`` (a parameter without a gradient counts as zero)."""
        units = next(iter(unit_grads.values())).shape[0]
        flat = torch.cat(
            [
                unit_grads[p].flatten(1).float()
                if p in unit_grads
                else self.basis.new_zeros(units, p.numel())
                for p in self.parameters
            ],
            dim=1,
        )
        return flat @ self.basis.to(flat.device)

    def lift(self, coordinates: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        """The gradient ``U coordinates``, split into the parameters' shapes."""
        flat = self.basis.to(coordinates.device) @ coordinates.float()
        parts = torch.split(flat, self._sizes)
        return {p: part.reshape(p.shape) for p, part in zip(self.parameters, parts, strict=True)}


def top_directions(
    gradients: torch.Tensor, k: int, groups: Sequence[str] | None = None
) -> torch.Tensor:
    """An orthonormal ``d x k`` basis of the leading directions of ``gradients``
    (``records x d``), each row scaled to unit norm first so that no record outweighs another
    (every unit is clipped in training).

    With ``groups`` (a label per record, such as its task), each group gets an equal share of
    the ``k`` directions, its own leading ones, so that a rare task's gradient is not projected
    away by a frequent task's; the shares are orthonormalised together.
    """
    if not 0 < k <= min(gradients.shape):
        raise ValueError(f"cannot take {k} directions of {tuple(gradients.shape)} gradients")
    rows = unit_rows(gradients)
    if groups is None:
        return leading_directions(rows, k).float().contiguous()
    labels = sorted(set(groups))
    shares = [k // len(labels) + (i < k % len(labels)) for i in range(len(labels))]
    parts = []
    for label, share in zip(labels, shares, strict=True):
        members = rows[[i for i, group in enumerate(groups) if group == label]]
        parts.append(leading_directions(members, min(share, len(members))))
    basis, _ = torch.linalg.qr(torch.cat(parts, dim=1))
    return basis.float().contiguous()


def unit_rows(gradients: torch.Tensor) -> torch.Tensor:
    """Each row of ``gradients`` scaled to norm 1, in float64."""
    rows = gradients.double()
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def leading_directions(rows: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` leading right singular vectors of ``rows``, as columns."""
    _, _, right = torch.linalg.svd(rows, full_matrices=False)
    return right[:k].T
