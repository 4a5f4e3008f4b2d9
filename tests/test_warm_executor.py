"""The warm executor's launcher: each task's token goes to the one live process of its bundle.

Real processes stand in for ``deploy.warm_runner`` (a few lines of Python that append each token
they read, with their process id, to a file): a bundle's tasks share one process, a process that
died is replaced, a new bundle replaces the old bundle's process, and stopping closes its input
so it exits.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from deploy.warm_executor import WarmLauncher

RECORDER = (
    "import os, sys\n"
    "for line in sys.stdin:\n"
    "    with open(sys.argv[1], 'a') as f:\n"
    "        f.write(f'{os.getpid()} {line}')\n"
)


def tokens_seen(path: Path, count: int) -> list[tuple[int, str]]:
    """``(process id, token)`` of the first ``count`` tokens recorded (waits for them)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [(int(pid), token) for pid, token in (line.split() for line in lines)]
        time.sleep(0.05)
    raise AssertionError(f"{count} tokens expected in {path}")


def test_tasks_of_a_bundle_share_one_process_until_it_dies_or_the_bundle_changes(
    tmp_path: Path,
) -> None:
    seen = tmp_path / "seen.txt"
    launcher = WarmLauncher("127.0.0.1:1", tmp_path, tmp_path / "audit.jsonl")
    launcher.argv = [sys.executable, "-c", RECORDER, str(seen)]
    try:
        launcher("t1", "bundle-a")
        launcher("t2", "bundle-a")
        first = launcher.process
        assert first is not None
        (a1, _), (a2, _) = tokens_seen(seen, 2)
        assert a1 == a2 == first.pid

        first.kill()
        first.wait()
        launcher("t3", "bundle-a")  # a dead process is replaced
        assert tokens_seen(seen, 3)[2] == (launcher.process.pid, "t3") != (first.pid, "t3")

        replaced = launcher.process
        launcher("t4", "bundle-b")  # another bundle: the old process ends, a new one starts
        assert replaced.wait(timeout=10) == 0
        assert tokens_seen(seen, 4)[3] == (launcher.process.pid, "t4")
        assert launcher.process.pid != replaced.pid
    finally:
        last = launcher.process
        launcher.stop()
    assert last is not None and last.wait(timeout=10) == 0 and launcher.process is None
