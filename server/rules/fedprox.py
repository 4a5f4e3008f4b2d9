"""FedProx (Li et al., 2020): FedAvg on the server; the sites add a proximal term
``mu / 2 * ||w - w_global||^2`` to their loss, with ``mu`` sent in every training message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.rules.base import register
from server.rules.fedavg import FedAvg

if TYPE_CHECKING:
    from server.config import RunConfig


@register
class FedProx(FedAvg):
    """FedAvg whose training messages carry ``proximal-mu``.

    Parameters
    ----------
    proximal_mu:
        Weight of the sites' proximal term (run config ``proximal-mu``), at least 0.
    """

    name = "fedprox"

    def __init__(self, proximal_mu: float) -> None:
        if not proximal_mu >= 0.0:
            raise ValueError(f"proximal_mu must be at least 0, got {proximal_mu}")
        self.proximal_mu = proximal_mu

    @classmethod
    def from_run_config(cls, config: RunConfig) -> FedProx:
        """FedProx with the run config's ``proximal-mu``."""
        return cls(config.proximal_mu)

    def train_config(self) -> dict[str, float]:
        """``proximal-mu`` for the sites' trainers."""
        return {"proximal-mu": self.proximal_mu}

    def describe(self) -> str:
        """Name and ``mu``."""
        return f"{self.name} (mu {self.proximal_mu:g})"
