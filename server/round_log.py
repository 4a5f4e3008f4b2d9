"""What a round did, as the strategy returns it: per site, who counted, who was left out and
why, who refused, the bytes each way and the privacy each site reported spending."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Generic, TypeVar

from flwr.app import ArrayRecord, MetricRecord

Site = TypeVar("Site", int, str)  # a node id while the round runs, a site name once returned


@dataclass
class RoundLog(Generic[Site]):
    """One round's messages of one kind (training or evaluation), per site.

    While the round runs the strategy keys every field by node id; the log it returns is keyed
    by site name (:meth:`named`).

    Attributes
    ----------
    examples:
        ``num-examples`` of each reply that counted.
    rejected, refused:
        Replies left out, with why; refusals, with the site's code.
    sent, received:
        Bytes of arrays sent to each site, and sent back by it.
    epsilon, delta:
        Training: the cumulative privacy spend each site reported, and its delta.
    seconds, loss:
        Training: the time each site reported; the finite mean losses reported.
    """

    examples: dict[Site, float] = field(default_factory=dict)
    rejected: dict[Site, str] = field(default_factory=dict)
    refused: dict[Site, str] = field(default_factory=dict)
    sent: dict[Site, int] = field(default_factory=dict)
    received: dict[Site, int] = field(default_factory=dict)
    epsilon: dict[Site, float] = field(default_factory=dict)
    delta: dict[Site, float] = field(default_factory=dict)
    seconds: dict[Site, float] = field(default_factory=dict)
    loss: dict[Site, float] = field(default_factory=dict)

    @property
    def sites(self) -> list[Site]:
        """The sites whose replies counted, in the order they arrived."""
        return list(self.examples)

    @property
    def train_loss(self) -> float:
        """Example-weighted mean train loss of the counted replies that reported one."""
        total = sum(self.examples[site] for site in self.loss)
        if not total:
            return float("nan")
        return sum(loss * self.examples[site] for site, loss in self.loss.items()) / total

    def named(self, name_of: Callable[[Site], str]) -> RoundLog[str]:
        """The same log keyed by ``name_of(node)`` instead of node ids."""
        return RoundLog(
            **{
                f.name: {name_of(node): value for node, value in getattr(self, f.name).items()}
                for f in fields(self)
            }
        )


@dataclass(frozen=True)
class RoundResult:
    """What an aggregate hook returns: the new global arrays (training only), the aggregated
    metrics (``None`` when there are none) and the round's log, keyed by site name."""

    arrays: ArrayRecord | None
    metrics: MetricRecord | None
    log: RoundLog[str]
