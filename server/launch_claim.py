"""One ServerApp per ``fedumit launch``, even when Flower starts the launch twice.

Flower 1.42's CLI retries a Control API request whose reply it did not get (a read error, a
timeout), and ``StartRun`` is not idempotent: against a busy or just-restarted SuperLink one
``flwr run`` can leave two runs of the same app and config, each with its own ``ServerApp``.
Two ``ServerApp``s of a fresh launch would each create a run folder and train it, and the sites
would spend their privacy budget twice. So ``fedumit launch`` gives every launch a random
``launch-id`` (run config), and the first ``ServerApp`` of a launch claims it in the run
directory (``<run-dir>/.launches/<launch-id>``, created exclusively) before it touches a run
folder; a second one finds the claim, says which run holds it, and ends without training.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

CLAIMS = ".launches"


def checked_launch_id(value: str) -> str:
    """``value`` if it is a launch id, 1 to 64 letters, digits, ``-`` and ``_`` (a plain file
    name, and a plain TOML string in a run config); else ``ValueError``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise ValueError(f"a launch id is 1 to 64 letters, digits, - and _, got {value!r}")
    return value


def claim_launch(
    run_dir: Path, launch_id: str, flower_run: int | None, folder: Path
) -> dict | None:
    """Claim ``launch_id`` for this ``ServerApp`` (Flower run ``flower_run``, driving
    ``folder``): ``None`` when it is now this one's, else the claim an earlier ``ServerApp`` of
    the same launch wrote."""
    claims = run_dir / CLAIMS
    claims.mkdir(parents=True, exist_ok=True)
    path = claims / checked_launch_id(launch_id)
    record = {
        "flower_run": flower_run,
        "folder": str(folder),
        "pid": os.getpid(),
        "claimed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    with os.fdopen(handle, "w", encoding="utf-8") as claim:
        json.dump(record, claim)
        claim.flush()
        os.fsync(claim.fileno())
    return None
