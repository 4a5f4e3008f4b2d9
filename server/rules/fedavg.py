"""FedAvg (McMahan et al., 2017): the mean of the replies weighted by their ``num-examples``,
folded one reply at a time so the server holds one adapter set whatever the number of sites."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from server.aggregation import Arrays, StreamingWeightedMean
from server.rules.base import AggregationRule, register


@register
class FedAvg(AggregationRule):
    """Example-weighted mean of the valid replies."""

    name = "fedavg"

    def begin(self, current: Arrays) -> None:
        """Start an empty running mean in ``current``'s name order."""
        self._current = current
        self._mean = StreamingWeightedMean(current)

    def fold(self, arrays: Arrays, weight: float) -> None:
        """Add the reply to the running mean."""
        self._mean.fold(arrays, weight)

    def result(self) -> OrderedDict[str, np.ndarray]:
        """The weighted mean."""
        return self._mean.result()
