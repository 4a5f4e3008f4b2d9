"""Coordinate-wise median (Yin et al., 2018): robust to a minority of outlying replies."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from server.aggregation import Arrays, coordinate_median
from server.rules.base import BufferedRule, register


@register
class Median(BufferedRule):
    """Element-wise median of the valid replies, unweighted."""

    name = "median"

    def combine(self, replies: list[Arrays]) -> OrderedDict[str, np.ndarray]:
        """The coordinate-wise median."""
        return coordinate_median(replies)
