"""What an aggregation rule is, and the registry that lists them.

A rule turns one round's valid replies into the next global adapter: the strategy validates each
reply, then hands it to :meth:`AggregationRule.fold`; :meth:`AggregationRule.result` combines
them. A rule may add keys to the training config (FedProx's proximal term) and may keep state
across rounds (FedAdam's moments), saved and restored through ``state_dict`` /
``load_state_dict`` like an Opacus accountant's. Each rule registers itself by name with
:func:`register`; the run config's ``aggregation`` key is checked against :data:`RULES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, TypeVar

import numpy as np

from server.aggregation import Arrays

if TYPE_CHECKING:
    from server.config import RunConfig

RULES: dict[str, type[AggregationRule]] = {}

Rule = TypeVar("Rule", bound=type["AggregationRule"])


def register(rule: Rule) -> Rule:
    """Class decorator: list ``rule`` in :data:`RULES` under its ``name``."""
    if rule.name in RULES:
        raise ValueError(f"aggregation rule {rule.name!r} is registered twice")
    RULES[rule.name] = rule
    return rule


def build_rule(config: RunConfig) -> AggregationRule:
    """The rule the run config's ``aggregation`` names, with its settings."""
    if config.aggregation not in RULES:
        raise ValueError(f"unknown aggregation {config.aggregation!r}; known: {sorted(RULES)}")
    return RULES[config.aggregation].from_run_config(config)


class AggregationRule(ABC):
    """How one round's valid replies become the next global adapter."""

    name: ClassVar[str]
    # True for a rule that only ever sees the sum of the replies (secure aggregation), never one
    # reply: its rounds run through Flower's SecAgg+ instead of per-reply validation.
    sums_only: ClassVar[bool] = False

    @classmethod
    def from_run_config(cls, config: RunConfig) -> AggregationRule:
        """The rule with the run config's settings (none by default)."""
        return cls()

    def train_config(self) -> dict[str, float]:
        """Keys this rule adds to every training message's config (none by default)."""
        return {}

    @abstractmethod
    def begin(self, current: Arrays) -> None:
        """Start a round whose global adapter is ``current``."""

    @abstractmethod
    def fold(self, arrays: Arrays, weight: float) -> None:
        """Take one valid reply (its arrays and ``num-examples``)."""

    @abstractmethod
    def result(self) -> OrderedDict[str, np.ndarray]:
        """The new global arrays (float32) from the replies folded since :meth:`begin`."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """What a resumed run needs to continue exactly (nothing by default)."""
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`'s output; empty state starts afresh. A stateless rule
        refuses state, which another rule must have written."""
        if state:
            raise ValueError(f"{self.name} keeps no state, got {sorted(state)[:3]}")

    def describe(self) -> str:
        """The rule and its settings, for the log."""
        return self.name


class BufferedRule(AggregationRule):
    """A rule that needs every reply at once (coordinate-wise statistics): it holds the K
    adapter sets of a round until :meth:`result`, and weighs them equally."""

    def begin(self, current: Arrays) -> None:
        """Forget the previous round's replies."""
        self._replies: list[Arrays] = []

    def fold(self, arrays: Arrays, weight: float) -> None:
        """Keep the reply (its weight plays no part)."""
        self._replies.append(arrays)

    def result(self) -> OrderedDict[str, np.ndarray]:
        """:meth:`combine` of the round's replies, which are then let go."""
        replies, self._replies = self._replies, []
        return self.combine(replies)

    @abstractmethod
    def combine(self, replies: list[Arrays]) -> OrderedDict[str, np.ndarray]:
        """Coordinate-wise combination of the replies."""
