"""Secure aggregation (``aggregation = "secagg"``): the server receives only the mean of the
sites' updates, unmasked by Flower's SecAgg+ (:mod:`server.secagg`), never one site's update."""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

import numpy as np

from server.aggregation import Arrays
from server.rules.base import AggregationRule, register


@register
class SecureMean(AggregationRule):
    """The global adapter plus the mean of the sites' clipped updates, every site weighing the
    same (a masked weight could not be checked, so none is sent)."""

    name = "secagg"
    sums_only: ClassVar[bool] = True

    def begin(self, current: Arrays) -> None:
        """Start a round from ``current``."""
        self._current = current
        self._update: Arrays | None = None

    def fold(self, arrays: Arrays, weight: float) -> None:
        """Take the round's one unmasked aggregate: the mean update of ``weight`` sites."""
        if self._update is not None:
            raise ValueError("secure aggregation hands over one aggregate per round")
        self._update = arrays

    def result(self) -> OrderedDict[str, np.ndarray]:
        """The current global arrays moved by the mean update."""
        if self._update is None:
            raise ValueError("no aggregate was folded")
        return OrderedDict(
            (name, (np.asarray(current, np.float64) + self._update[name]).astype(np.float32))
            for name, current in self._current.items()
        )
