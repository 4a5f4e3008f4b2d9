"""Poisson sampling of privacy units and their grouping into micro-batches.

Every step includes each unit (a patient, or a record) independently with probability ``q``:
the sampling Opacus's accountant assumes. A sampled unit brings its records (at most
``max_records_per_unit`` of them, drawn at random), and the records of a step are split into
micro-batches of at most ``physical_batch_size`` rows that share a vision patch grid, so that
per-sample gradients on the vision side are exact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from client.privacy.randomness import SiteRandomness


@dataclass(frozen=True)
class UnitIndex:
    """Which records belong to which privacy unit."""

    units: tuple[tuple[int, ...], ...]  # record indices per unit

    @classmethod
    def build(cls, unit_keys: Sequence[str]) -> UnitIndex:
        """Group record positions by unit key (patient id or record id), in first-seen order."""
        groups: dict[str, list[int]] = defaultdict(list)
        for position, key in enumerate(unit_keys):
            groups[key].append(position)
        return cls(tuple(tuple(g) for g in groups.values()))

    def __len__(self) -> int:
        return len(self.units)


@dataclass(frozen=True)
class MicroBatch:
    """Record positions of one forward pass and, per row, its unit's slot in the step."""

    records: tuple[int, ...]
    unit_slots: torch.Tensor


@dataclass(frozen=True)
class Step:
    """One logical step: the sampled units' micro-batches."""

    micro_batches: tuple[MicroBatch, ...]
    n_units: int
    n_records: int


def sample_step(
    index: UnitIndex,
    sample_rate: float,
    vision_shapes: Sequence[tuple],
    *,
    physical_batch_size: int,
    max_records_per_unit: int,
    randomness: SiteRandomness,
) -> Step:
    """Draw one Poisson step and split it into shape-homogeneous micro-batches."""
    chosen = (randomness.uniform(len(index)) < sample_rate).nonzero().flatten()
    by_shape: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for slot, unit in enumerate(chosen.tolist()):
        records = index.units[unit]
        if len(records) > max_records_per_unit:
            order = randomness.permutation(len(records))[:max_records_per_unit]
            records = tuple(records[i] for i in sorted(order.tolist()))
        for record in records:
            by_shape[vision_shapes[record]].append((record, slot))
    micro_batches = []
    for shape in sorted(by_shape):
        rows = by_shape[shape]
        for start in range(0, len(rows), physical_batch_size):
            chunk = rows[start : start + physical_batch_size]
            micro_batches.append(
                MicroBatch(
                    records=tuple(r for r, _ in chunk),
                    unit_slots=torch.tensor([s for _, s in chunk], dtype=torch.long),
                )
            )
    n_records = sum(len(m.records) for m in micro_batches)
    return Step(tuple(micro_batches), n_units=len(chosen), n_records=n_records)
