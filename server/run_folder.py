"""A run's folder: resolved config, per-round metrics as JSON lines, checkpoints, plots.

Layout of ``runs/<run-id>/``::

    config.json         the resolved run config and model spec
    metrics.jsonl       one line per round and stage (appended, fsync'ed)
    checkpoints/        global adapters after every round (see :mod:`server.checkpoints`)
    plots/              PNG plots, redrawn after every round
    export/             the exported model (``fedumit export``)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def new_run_id() -> str:
    """A sortable run id from the current UTC time."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class RunFolder:
    """Paths and writers of one run's folder."""

    root: Path

    @property
    def run_id(self) -> str:
        """The folder's name."""
        return self.root.name

    @property
    def checkpoints(self) -> Path:
        """Where per-round checkpoints go."""
        return self.root / "checkpoints"

    @property
    def plots(self) -> Path:
        """Where PNG plots go."""
        return self.root / "plots"

    @property
    def metrics_path(self) -> Path:
        """The per-round metrics log."""
        return self.root / "metrics.jsonl"

    def create(self, config: Mapping[str, Any]) -> RunFolder:
        """Make the folder and write the resolved config (kept as is when resuming)."""
        for folder in (self.root, self.checkpoints, self.plots):
            folder.mkdir(parents=True, exist_ok=True)
        config_path = self.root / "config.json"
        if not config_path.exists():
            write_json_atomically(config_path, config)
        return self

    def config(self) -> dict[str, Any]:
        """The resolved config the run started with."""
        return json.loads((self.root / "config.json").read_text(encoding="utf-8"))

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one round's record and fsync it."""
        line = json.dumps(record, sort_keys=True, allow_nan=True)
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def metrics(self) -> list[dict[str, Any]]:
        """Every complete metrics line (a torn last line, from a crash, is ignored)."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_metrics_after(self, stage: str, server_round: int, stages: list[str]) -> None:
        """Drop metrics of rounds after (stage, round), so a resumed run does not repeat them."""
        order = {name: position for position, name in enumerate(stages)}
        limit = (order.get(stage, -1), server_round)
        kept = [
            r for r in self.metrics() if (order.get(r.get("stage"), -1), r.get("round", 0)) <= limit
        ]
        text = "".join(json.dumps(r, sort_keys=True, allow_nan=True) + "\n" for r in kept)
        write_text_atomically(self.metrics_path, text)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` via a temporary file, fsync and rename."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
