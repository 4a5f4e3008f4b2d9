"""One coordinator at a time per run folder: a second waits, then fails naming the folder."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from server.folder_lock import LOCK_FILE, RunFolderBusy, driving

HOLD = """
import sys, time
from pathlib import Path
from server.folder_lock import driving
with driving(Path(sys.argv[1]), wait_s=0):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_in_another_process(folder: Path, seconds: float) -> subprocess.Popen:
    """A process holding ``folder``'s lock for ``seconds`` (returned once it holds it)."""
    repo = Path(__file__).resolve().parents[1]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds)],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_coordinator_fails_naming_the_folder_and_the_holder(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = hold_in_another_process(folder, 30)
    try:
        with pytest.raises(RunFolderBusy) as busy, driving(folder, wait_s=0.5, poll_s=0.1):
            pytest.fail("entered a folder another coordinator drives")
        assert str(folder) in str(busy.value) and str(holder.pid) in str(busy.value)
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_free_once_its_holder_is_killed(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = hold_in_another_process(folder, 30)
    holder.kill()  # a crash: no unlock runs, the kernel drops the lock with the process
    holder.wait()
    with driving(folder, wait_s=0):
        assert (folder / LOCK_FILE).read_text() != str(holder.pid)


def test_a_waiting_coordinator_goes_on_when_the_holder_lets_go(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    started, released = threading.Event(), threading.Event()

    def hold_briefly() -> None:
        with driving(folder, wait_s=0):
            started.set()
            time.sleep(0.5)
        released.set()

    first = threading.Thread(target=hold_briefly)
    first.start()
    started.wait(5)
    with driving(folder, wait_s=10, poll_s=0.05):
        assert released.is_set()
    first.join()
