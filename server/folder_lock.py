"""One coordinator at a time per run folder.

A SuperLink crash does not stop the ``ServerApp`` process that was driving the run: it keeps
retrying its connection until the restarted SuperLink answers and stops it. A coordinator who
resumes the run meanwhile would start a second ``ServerApp`` on the same folder, and both would
append metrics and write checkpoints there. Each ``ServerApp`` therefore holds an exclusive
``flock`` on ``<run folder>/.coordinator.lock`` while it drives the folder. The kernel releases
it when the process exits, however it exits, so a crashed coordinator never leaves it behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

LOCK_FILE = ".coordinator.lock"


class RunFolderBusy(RuntimeError):
    """Another coordinator still drives the run folder."""


@contextlib.contextmanager
def driving(folder: Path, wait_s: float, poll_s: float = 1.0) -> Iterator[None]:
    """Hold ``folder``'s coordinator lock for the block, waiting up to ``wait_s`` seconds for
    another coordinator to let it go; raises :class:`RunFolderBusy` naming the holder when it
    does not."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with path.open("a+", encoding="utf-8") as handle:
        deadline = time.monotonic() + wait_s
        waiting_logged = False
        while not _try_lock(handle):
            holder = path.read_text(encoding="utf-8").strip() or "unknown"
            if time.monotonic() >= deadline:
                raise RunFolderBusy(
                    f"{folder} is still driven by another coordinator (process {holder}) after "
                    f"{wait_s:.0f} s; stop that run (flwr stop) before resuming this folder"
                )
            if not waiting_logged:
                log.warning(
                    "%s is driven by another coordinator (process %s); waiting up to %.0f s "
                    "for it to stop",
                    folder,
                    holder,
                    wait_s,
                )
                waiting_logged = True
            time.sleep(poll_s)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
