"""What a site discloses beyond its DP-protected adapter: evaluation scores and counts.

Evaluation is not covered by differential privacy, so the site meters it by its own policy: a
task and language with fewer than ``min_group_size`` records discloses nothing (a group of one
record would read that record out), scores are rounded to ``score_decimals``, and counts to a
multiple of ``count_rounding``. Exact counts of misses are withheld too: the share of malformed
answers travels as a rounded score like any other.
"""

from __future__ import annotations

from collections.abc import Mapping

from client.config import Policy
from shared_model.tasks.scoring import COUNT, MISSES, count_key


def round_count(count: float, policy: Policy) -> float:
    """``count`` rounded to the nearest multiple of the policy's ``count_rounding``."""
    step = policy.count_rounding
    return float(round(count / step) * step)


def disclose_scores(metrics: Mapping[str, float], policy: Policy) -> dict[str, float]:
    """The ``<task>/<lang>/<metric>`` scores a site may send: groups (and sub-groups such as
    VQA's ``closed_*`` beside ``closed_count``) below the minimum size are left out, the rest
    rounded."""
    disclosed: dict[str, float] = {}
    for key, value in metrics.items():
        group, name = key.rsplit("/", 1)
        weighed_by = count_key(key, metrics)
        if weighed_by is None or metrics[weighed_by] < policy.min_group_size:
            continue
        if name == COUNT or name.endswith(f"_{COUNT}"):
            disclosed[key] = max(round_count(value, policy), float(policy.min_group_size))
        elif name == MISSES:
            rate = value / metrics[f"{group}/{COUNT}"]
            disclosed[f"{group}/miss_rate"] = round(rate, policy.score_decimals)
        else:
            disclosed[key] = round(float(value), policy.score_decimals)
    return disclosed
