"""Global adapter checkpoints: one safetensors file per stage and round, written atomically.

A checkpoint holds the stage's global arrays and the strategy's state (its aggregation rule's,
such as FedAdam's moments; :meth:`server.strategy.FedUmitStrategy.state_dict`) plus metadata:
format version, fingerprint, stage, round, run id. A file that
cannot be read (a crash mid-write on a filesystem without atomic rename, a damaged disk) is
skipped in favour of the previous round's.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
# The strategy's state is stored under this prefix; its name is from when FedAdam's moments were
# the only state, and stays so that earlier run folders resume.
STATE_PREFIX = "optimizer/"
_NAME = re.compile(r"^(align|instruct)-round-(\d{4})\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint does not belong to this run or model."""


@dataclass(frozen=True)
class Checkpoint:
    """A stage's global arrays after a round, and the strategy's state to go on from them."""

    stage: str
    server_round: int
    fingerprint: str
    run_id: str
    arrays: dict[str, np.ndarray]
    strategy_state: dict[str, np.ndarray]


def checkpoint_path(folder: Path, stage: str, server_round: int) -> Path:
    """Where the checkpoint of ``stage`` after ``server_round`` lives."""
    return folder / f"{stage}-round-{server_round:04d}.safetensors"


def save_checkpoint(folder: Path, checkpoint: Checkpoint) -> Path:
    """Write atomically: temporary file, fsync, rename, fsync of the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, checkpoint.stage, checkpoint.server_round)
    tensors = {name: np.ascontiguousarray(a) for name, a in checkpoint.arrays.items()}
    tensors.update(
        {STATE_PREFIX + k: np.ascontiguousarray(a) for k, a in checkpoint.strategy_state.items()}
    )
    metadata = {
        "format": FORMAT_VERSION,
        "stage": checkpoint.stage,
        "round": str(checkpoint.server_round),
        "fingerprint": checkpoint.fingerprint,
        "run_id": checkpoint.run_id,
        "order": json.dumps(list(checkpoint.arrays)),
    }
    temporary = path.with_name(path.name + ".tmp")
    save_file(tensors, str(temporary), metadata=metadata)
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    temporary.replace(path)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return path


def load_checkpoint(path: Path, fingerprint: str | None = None) -> Checkpoint:
    """Read a checkpoint; with ``fingerprint``, refuse one made for another model."""
    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {metadata.get('format')!r} is not {FORMAT_VERSION}")
    if fingerprint is not None and metadata.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{path}: made for fingerprint {metadata.get('fingerprint')!r}, not {fingerprint!r}"
        )
    tensors = load_file(str(path))
    order = json.loads(metadata["order"])
    return Checkpoint(
        stage=metadata["stage"],
        server_round=int(metadata["round"]),
        fingerprint=metadata["fingerprint"],
        run_id=metadata["run_id"],
        arrays={name: tensors[name] for name in order},
        strategy_state={
            k[len(STATE_PREFIX) :]: a for k, a in tensors.items() if k.startswith(STATE_PREFIX)
        },
    )


def latest_checkpoint(
    folder: Path, stage: str, fingerprint: str | None = None
) -> Checkpoint | None:
    """The newest readable checkpoint of ``stage`` (damaged newer ones are skipped, logged)."""
    found = last_checkpoints(folder, stage, 1, fingerprint)
    return found[0] if found else None


def last_checkpoints(
    folder: Path, stage: str, count: int, fingerprint: str | None = None
) -> list[Checkpoint]:
    """The newest ``count`` readable checkpoints of ``stage``, oldest first (fewer when the
    stage has fewer; damaged ones are skipped, logged)."""
    candidates = sorted(
        (int(m.group(2)), p)
        for p in folder.glob(f"{stage}-round-*.safetensors")
        if (m := _NAME.match(p.name))
    )
    found: list[Checkpoint] = []
    for _, path in reversed(candidates):
        if len(found) == count:
            break
        try:
            found.append(load_checkpoint(path, fingerprint))
        except (SafetensorError, OSError, KeyError, ValueError, json.JSONDecodeError) as error:
            if isinstance(error, CheckpointError):
                raise
            log.warning("skipping unreadable checkpoint %s: %s", path, error)
    return found[::-1]
