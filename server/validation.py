"""Checks every train reply must pass before it counts; each failure is a reason string."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Message

from protocol import ARRAYS, META, METRICS, from_record
from server.aggregation import update_norm


@dataclass(frozen=True)
class Expectation:
    """What a valid reply of this round looks like."""

    fingerprint: str
    stage: str
    server_round: int
    reference: Mapping[str, np.ndarray]
    max_update_norm: float = 0.0  # 0: no bound


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
    meta, metrics = content.get(META), content.get(METRICS)
    if meta is None or metrics is None or ARRAYS not in content:
        return "reply lacks arrays, metrics or meta", None
    for key, value in (
        ("fingerprint", expected.fingerprint),
        ("stage", expected.stage),
        ("server-round", expected.server_round),
    ):
        if meta.get(key) != value:
            return f"{key} {meta.get(key)!r} does not match {value!r}", None
    examples = metrics.get("num-examples", 0)
    if not examples or examples <= 0:
        return f"num-examples must be positive, got {examples}", None
    arrays = from_record(content[ARRAYS])
    reason = check_arrays(arrays, expected)
    return (reason, None) if reason else (None, arrays)


def check_arrays(arrays: Mapping[str, np.ndarray], expected: Expectation) -> str | None:
    """Names, shapes, dtypes, finiteness and update norm against the global arrays."""
    reference = expected.reference
    if list(arrays) != list(reference):
        missing = [n for n in reference if n not in arrays][:2]
        extra = [n for n in arrays if n not in reference][:2]
        return f"array names differ (missing {missing}, unexpected {extra})"
    for name, array in arrays.items():
        if array.dtype != np.float32:
            return f"array {name!r} has dtype {array.dtype}, expected float32"
        if array.shape != reference[name].shape:
            return f"array {name!r} has shape {array.shape}, expected {reference[name].shape}"
        if not np.isfinite(array).all():
            return f"array {name!r} holds NaN or infinite values"
    if expected.max_update_norm > 0:
        norm = update_norm(arrays, reference)
        if norm > expected.max_update_norm:
            return f"update norm {norm:.4g} exceeds the bound {expected.max_update_norm:.4g}"
    return None
