"""Pure aggregation helpers the rules of :mod:`server.rules` and the reply checks share.

:class:`StreamingWeightedMean` folds replies one at a time into float64 running sums, so the
server holds one adapter set (plus the reply being folded) whatever the number of sites.
Coordinate-wise median and trimmed mean need every reply at once: they are not streaming and
hold K adapter sets; consortia that choose them trade memory for robustness.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

Arrays = Mapping[str, np.ndarray]


class StreamingWeightedMean:
    """Weighted mean of adapter sets, one fold at a time, in the reference's name order."""

    def __init__(self, reference: Arrays) -> None:
        self._sums = OrderedDict(
            (n, np.zeros(a.shape, dtype=np.float64)) for n, a in reference.items()
        )
        self.total_weight = 0.0
        self.count = 0

    def fold(self, arrays: Arrays, weight: float) -> None:
        """Add ``weight * arrays`` to the running sums."""
        if weight <= 0:
            raise ValueError(f"weights must be positive, got {weight}")
        for name, total in self._sums.items():
            total += np.asarray(arrays[name], dtype=np.float64) * weight
        self.total_weight += weight
        self.count += 1

    def result(self) -> OrderedDict[str, np.ndarray]:
        """The weighted mean as float32 arrays."""
        if not self.count:
            raise ValueError("no reply was folded")
        return OrderedDict(
            (name, (total / self.total_weight).astype(np.float32))
            for name, total in self._sums.items()
        )


def coordinate_median(replies: Sequence[Arrays]) -> OrderedDict[str, np.ndarray]:
    """Element-wise median over replies (unweighted)."""
    names = list(replies[0])
    return OrderedDict(
        (n, np.median(np.stack([r[n] for r in replies]), axis=0).astype(np.float32)) for n in names
    )


def trim_count(replies: int, fraction: float) -> int:
    """Replies dropped at each end: ``fraction`` of them, and at least one from three replies on
    (``int(0.1 * K)`` alone trims nothing below ten sites, leaving the mean as fragile as
    FedAvg's in the small consortia that hospitals form)."""
    cut = int(fraction * replies)
    return max(cut, 1) if replies >= 3 else cut


def trimmed_mean(replies: Sequence[Arrays], fraction: float) -> OrderedDict[str, np.ndarray]:
    """Element-wise mean after dropping the :func:`trim_count` largest and smallest values."""
    cut = trim_count(len(replies), fraction)
    if len(replies) - 2 * cut < 1:
        raise ValueError(f"trimming {fraction} of {len(replies)} replies leaves none")
    result = OrderedDict()
    for name in replies[0]:
        stacked = np.sort(np.stack([r[name] for r in replies]), axis=0)
        result[name] = stacked[cut : len(replies) - cut].mean(axis=0).astype(np.float32)
    return result


def update_rms(arrays: Arrays, reference: Arrays) -> float:
    """Root-mean-square per coordinate of ``arrays - reference``: the update's L2 norm over
    every array divided by the square root of the number of coordinates, so that one bound
    fits adapters of any size."""
    squares = sum(
        float(np.sum((np.asarray(arrays[n], np.float64) - reference[n]) ** 2)) for n in reference
    )
    coordinates = sum(int(np.size(a)) for a in reference.values())
    return (squares / max(coordinates, 1)) ** 0.5


def first_non_finite(arrays: Arrays) -> str | None:
    """The name of the first array holding NaN or an infinity, ``None`` when all are finite."""
    return next((name for name, a in arrays.items() if not np.isfinite(a).all()), None)
