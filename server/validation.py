"""Checks every reply must pass before it counts; each failure is a reason string.

The coordinator is honest but a site's reply is only trusted as far as these checks go: a
reply's arrays and its self-reported weights (``num-examples`` in training, the per-group
``<task>/<lang>/count`` in evaluation) are all bounded before they reach an aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Message

from protocol import ARRAYS, META, METRICS, from_record
from server.aggregation import first_non_finite, update_rms
from server.config import DEFAULT_MAX_NUM_EXAMPLES, DEFAULT_MAX_UPDATE_NORM


@dataclass(frozen=True)
class Expectation:
    """What a valid reply of this round looks like."""

    fingerprint: str
    stage: str
    server_round: int
    reference: Mapping[str, np.ndarray]
    max_update_norm: float = DEFAULT_MAX_UPDATE_NORM  # per-coordinate RMS; 0: no bound
    max_num_examples: int = DEFAULT_MAX_NUM_EXAMPLES
    fixed: frozenset[str] = frozenset()  # arrays the layout never trains (a frozen LoRA ``A``)


def reply_status(message: Message) -> tuple[str, str]:
    """``(status, reason)`` a site gave; Flower-level errors count as ``error``."""
    if message.has_error():
        return "error", f"{message.error.reason} (code {message.error.code})"
    meta = message.content.get(META)
    if meta is None:
        return "error", "reply has no meta record"
    return str(meta.get("status", "")), str(meta.get("reason", ""))


def check_train_reply(message: Message, expected: Expectation) -> tuple[str | None, dict | None]:
    """Return ``(reason, arrays)``: a reason to reject the reply, or ``None`` and its arrays."""
    content = message.content
    meta, metrics = content.config_records.get(META), content.metric_records.get(METRICS)
    if meta is None or metrics is None or ARRAYS not in content.array_records:
        return "reply lacks arrays, metrics or meta", None
    for key, value in (
        ("fingerprint", expected.fingerprint),
        ("stage", expected.stage),
        ("server-round", expected.server_round),
    ):
        if meta.get(key) != value:
            return f"{key} {meta.get(key)!r} does not match {value!r}", None
    reason = check_count("num-examples", metrics.get("num-examples"), expected.max_num_examples)
    if reason:
        return reason, None
    try:
        arrays = from_record(content.array_records[ARRAYS])
    except (TypeError, ValueError, EOFError, OSError) as error:
        return f"arrays do not decode ({type(error).__name__}: {error})", None
    reason = check_arrays(arrays, expected)
    return (reason, None) if reason else (None, arrays)


def reported_number(metrics: Mapping[str, object], key: str) -> float:
    """A number a reply reports for display (loss, seconds, epsilon, a score); NaN when it is
    missing or not a number, so that a malformed value is shown as unknown, never raised."""
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)


def check_count(key: str, value: object, cap: int) -> str | None:
    """Why a self-reported count cannot weigh an aggregate, ``None`` when it can: it must be a
    finite whole number (a float holding one is fine: Flower's metrics are floats) in
    ``[1, cap]``."""
    if value is None:
        return f"{key} is missing"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{key} must be a number, got {type(value).__name__}"
    if not math.isfinite(value):
        return f"{key} must be finite, got {value}"
    if value != math.floor(value):
        return f"{key} must be a whole number, got {value}"
    if not 1 <= value <= cap:
        return f"{key} {value:.15g} is outside [1, {cap}] (run config max-num-examples)"
    return None


def check_group_counts(metrics: Mapping[str, object], cap: int) -> str | None:
    """The first unusable ``<task>/<lang>/count`` of an evaluation reply, ``None`` if none."""
    for key, value in metrics.items():
        if key.count("/") == 2 and key.endswith("/count"):
            reason = check_count(key, value, cap)
            if reason:
                return reason
    return None


def check_arrays(arrays: Mapping[str, np.ndarray], expected: Expectation) -> str | None:
    """Names, shapes, dtypes, finiteness, the arrays the layout never trains (returned as
    sent) and update norm against the global arrays."""
    reference = expected.reference
    if list(arrays) != list(reference):
        missing = [n for n in reference if n not in arrays][:2]
        extra = [n for n in arrays if n not in reference][:2]
        return f"array names differ (missing {missing}, unexpected {extra})"
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            return f"array {name!r} is not one array but a {type(array).__name__}"
        if array.dtype != np.float32:
            return f"array {name!r} has dtype {array.dtype}, expected float32"
        if array.shape != reference[name].shape:
            return f"array {name!r} has shape {array.shape}, expected {reference[name].shape}"
    non_finite = first_non_finite(arrays)
    if non_finite is not None:
        return f"array {non_finite!r} holds NaN or infinite values"
    for name in arrays:
        if name in expected.fixed and not np.array_equal(arrays[name], reference[name]):
            return (
                f"array {name!r} is frozen in this stage's layout (frozen_a) but came back changed"
            )
    if expected.max_update_norm > 0:
        rms = update_rms(arrays, reference)
        if rms > expected.max_update_norm:
            return (
                f"update norm {rms:.4g} per coordinate (RMS) exceeds the bound "
                f"{expected.max_update_norm:.4g} (run config max-update-norm)"
            )
    return None
