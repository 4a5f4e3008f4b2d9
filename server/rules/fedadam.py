"""FedAdam (Reddi et al., 2021): server-side Adam on the pseudo-gradient ``mean - global``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from server.aggregation import first_non_finite
from server.rules.base import register
from server.rules.fedavg import FedAvg

if TYPE_CHECKING:
    from server.config import RunConfig


@register
class FedAdam(FedAvg):
    """The example-weighted mean, then one Adam step from the global adapter towards it.

    The moment estimates are state: :meth:`state_dict` and :meth:`load_state_dict` let
    checkpoints carry them, so that a resumed run continues exactly.

    Parameters
    ----------
    server_lr:
        The server's learning rate (run config ``server-lr``), at least 0.
    beta1, beta2, tau:
        Adam's moment decays (0.9, 0.99) and its adaptivity floor (1e-3), as Reddi et al.
    """

    name = "fedadam"

    def __init__(
        self, server_lr: float, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        if not server_lr >= 0.0 or not 0.0 <= beta1 < 1.0 or not 0.0 <= beta2 < 1.0:
            raise ValueError("need server_lr >= 0 and 0 <= beta1, beta2 < 1")
        self.server_lr, self.beta1, self.beta2, self.tau = server_lr, beta1, beta2, tau
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    @classmethod
    def from_run_config(cls, config: RunConfig) -> FedAdam:
        """FedAdam with the run config's ``server-lr``."""
        return cls(config.server_lr)

    def result(self) -> OrderedDict[str, np.ndarray]:
        """New global arrays: one Adam step from the round's global arrays by the replies' mean.

        The moments advance only when every new array is finite: a round that fails on a
        non-finite aggregate leaves them as they were, so its retry starts from the same state.
        """
        mean = super().result()
        result, moments = OrderedDict(), {}
        for name, value in self._current.items():
            delta = np.asarray(mean[name], np.float64) - value
            m = self.beta1 * self.m.get(name, 0.0) + (1 - self.beta1) * delta
            v = self.beta2 * self.v.get(name, 0.0) + (1 - self.beta2) * delta**2
            moments[name] = m, v
            step = self.server_lr * m / (np.sqrt(v) + self.tau)
            result[name] = (value + step).astype(np.float32)
        if first_non_finite(result) is None:
            for name, (m, v) in moments.items():
                self.m[name], self.v[name] = m, v
        return result

    def state_dict(self) -> dict[str, np.ndarray]:
        """Moments as named float64 arrays (``m/<name>``, ``v/<name>``)."""
        return {
            **{f"m/{n}": a.copy() for n, a in self.m.items()},
            **{f"v/{n}": a.copy() for n, a in self.v.items()},
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore moments saved by :meth:`state_dict`; empty state starts afresh."""
        foreign = [k for k in state if not k.startswith(("m/", "v/"))]
        if foreign:
            raise ValueError(f"{self.name} state holds no {foreign[:3]}")
        self.m = {k[2:]: np.asarray(a, np.float64) for k, a in state.items() if k[0] == "m"}
        self.v = {k[2:]: np.asarray(a, np.float64) for k, a in state.items() if k[0] == "v"}

    def describe(self) -> str:
        """Name and server learning rate."""
        return f"{self.name} (server lr {self.server_lr:g})"
