"""Poisson sampling of privacy units and their grouping into micro-batches.

Every step includes each unit (a patient, or a record) independently with probability ``q``:
the sampling Opacus's accountant assumes. A sampled unit brings its records (at most
``max_records_per_unit`` of them, drawn at random), and the records of a step are packed into
micro-batches (physical batches) of at most ``physical_batch_size`` rows whose padded size,
rows times the longest row's tokens (visual tokens included), stays within ``token_budget``:
a 32-slice CT series of 4,096 visual tokens and a radiograph of 256 share a step, and the GPU
holds what one micro-batch needs whatever the step's logical batch. Records of different patch
grids may share a micro-batch: per-sample gradients stay exact
(:mod:`client.privacy.per_unit`). A record longer than the budget runs alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
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
    record_tokens: Callable[[int], int],
    *,
    physical_batch_size: int,
    token_budget: int,
    max_records_per_unit: int,
    randomness: SiteRandomness,
) -> Step:
    """Draw one Poisson step and pack it into micro-batches within ``token_budget``
    (``record_tokens(i)``: the tokens of record ``i``, visual tokens included)."""
    chosen = (randomness.uniform(len(index)) < sample_rate).nonzero().flatten()
    rows: list[tuple[int, int, int]] = []  # (tokens, record, unit slot)
    for slot, unit in enumerate(chosen.tolist()):
        records = index.units[unit]
        if len(records) > max_records_per_unit:
            order = randomness.permutation(len(records))[:max_records_per_unit]
            records = tuple(records[i] for i in sorted(order.tolist()))
        rows.extend((record_tokens(record), record, slot) for record in records)
    micro_batches = [
        MicroBatch(
            records=tuple(record for _, record, _ in chunk),
            unit_slots=torch.tensor([slot for _, _, slot in chunk], dtype=torch.long),
        )
        for chunk in pack(rows, physical_batch_size, token_budget)
    ]
    return Step(tuple(micro_batches), n_units=len(chosen), n_records=len(rows))


def pack(
    rows: Sequence[tuple[int, int, int]], physical_batch_size: int, token_budget: int
) -> list[list[tuple[int, int, int]]]:
    """Longest first, fill each chunk while ``len(chunk) * longest <= token_budget`` and
    ``len(chunk) <= physical_batch_size`` (a row longer than the budget goes alone)."""
    if physical_batch_size < 1 or token_budget < 1:
        raise ValueError(f"need positive batch limits, got {physical_batch_size}, {token_budget}")
    chunks: list[list[tuple[int, int, int]]] = []
    for row in sorted(rows, key=lambda r: (-r[0], r[1])):
        if chunks:
            chunk = chunks[-1]
            longest = chunk[0][0]  # sorted: the first row is the longest
            if len(chunk) < physical_batch_size and (len(chunk) + 1) * longest <= token_budget:
                chunk.append(row)
                continue
        chunks.append([row])
    return chunks
