"""What a site discloses beyond its DP-protected adapter: evaluation scores and counts.

Evaluation is not covered by differential privacy, so the site meters it by its own policy: a
task and language with fewer than ``min_group_size`` records discloses nothing (a group of one
record would read that record out), scores are rounded to ``score_decimals``, and counts to a
multiple of ``count_rounding``. Exact counts of misses are withheld too: the share of malformed
answers travels as a rounded score like any other. An evaluation scores at most
``max_eval_records`` of the split, the same fixed subset every time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from client.config import Policy
from shared_model.sample import Sample
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


def evaluation_subset(records: Sequence[Sample], most: int) -> list[Sample]:
    """The records an evaluation scores: every one when ``most`` is 0 or they are no more than
    ``most``; otherwise the ``most`` whose ids' SHA-256 digests are lowest, in their original
    order. The subset depends on the record ids alone, so every evaluation of the same split
    scores the same records (a uniform sample of them, whatever order the archive lists)."""
    if most <= 0 or len(records) <= most:
        return list(records)
    digests = [hashlib.sha256(r.record_id.encode("utf-8")).digest() for r in records]
    kept = set(sorted(range(len(records)), key=digests.__getitem__)[:most])
    return [record for position, record in enumerate(records) if position in kept]
