"""Coordinate-wise trimmed mean (Yin et al., 2018): the mean of each coordinate after dropping
its largest and smallest values."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from server.aggregation import Arrays, trimmed_mean
from server.rules.base import BufferedRule, register

if TYPE_CHECKING:
    from server.config import RunConfig


@register
class TrimmedMean(BufferedRule):
    """Element-wise mean of the valid replies after trimming each end, unweighted.

    Parameters
    ----------
    trim_fraction:
        The share of replies dropped at each end (run config ``trim-fraction``), in [0, 0.5);
        at least one per end from three replies on (:func:`server.aggregation.trim_count`).
    """

    name = "trimmed-mean"

    def __init__(self, trim_fraction: float = 0.1) -> None:
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
        self.trim_fraction = trim_fraction

    @classmethod
    def from_run_config(cls, config: RunConfig) -> TrimmedMean:
        """The trimmed mean with the run config's ``trim-fraction``."""
        return cls(config.trim_fraction)

    def combine(self, replies: list[Arrays]) -> OrderedDict[str, np.ndarray]:
        """The coordinate-wise trimmed mean."""
        return trimmed_mean(replies, self.trim_fraction)

    def describe(self) -> str:
        """Name and trimmed share."""
        return f"{self.name} ({self.trim_fraction:g} per end)"
