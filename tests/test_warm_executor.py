"""The warm executor's launcher: each task's token goes to the one live process of its bundle.

Real processes stand in for ``deploy.warm_runner`` (a few lines of Python that append each token
they read, with their process id, to a file): a bundle's tasks share one process, a process that
died is replaced, a new bundle replaces the old bundle's process, and stopping closes its input
so it exits. Then a real ``deploy.warm_runner`` over Flower's own SuperNode Runtime API: the
spare process imports the site's dependencies before any task, and refuses its first task's
unapproved bundle without importing the bundle's code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flwr.common.constant import ErrorCode, SubStatus
from flwr.supernode.nodestate import NodeState

from client.audit import AuditLog
from deploy.warm_executor import WarmLauncher
from deploy.warm_runner import remove_dead_folders
from tests.deploy_fixtures import wait_for
from tests.runtime_fixtures import (
    acquire_token,
    build_fab,
    receive,
    status,
    supernode_runtime_api,  # noqa: F401  (the supernode fixture)
)

RECORDER = (
    "import os, sys\n"
    "for line in sys.stdin:\n"
    "    with open(sys.argv[1], 'a') as f:\n"
    "        f.write(f'{os.getpid()} {line}')\n"
)

MARKED_APP = """\
from pathlib import Path

Path({marker!r}).write_text("imported")

from flwr.clientapp import ClientApp

client = ClientApp()
server = None
"""
IMPORTED = "Imported the site's dependencies"


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


def test_the_spare_process_imports_the_site_dependencies_first_and_refuses_an_unapproved_bundle(
    tmp_path: Path, supernode: tuple[str, NodeState], capfd: pytest.CaptureFixture[str]
) -> None:
    address, state = supernode
    marker = tmp_path / "marker"
    fab = build_fab(tmp_path, "marked", MARKED_APP.format(marker=str(marker)))
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.initialize(site="hospital-a")
    launcher = WarmLauncher(address, tmp_path / "work", audit.path, input_timeout=60)
    launcher.start()
    spare = launcher.process
    logged: list[str] = []

    def site_log() -> str:
        logged.append(capfd.readouterr().err)
        return "".join(logged)

    try:
        wait_for(lambda: IMPORTED in site_log(), 120, "the spare process's imports", 0.2)
        assert spare is not None and spare.poll() is None  # no task yet: it waits

        receive(state, fab, 1)  # the bundle is on no approved list at this site
        task_id, token = acquire_token(address)
        launcher(token, fab.hash_str)
        assert launcher.process is spare  # the spare takes the first task

        wait_for(lambda: status(state, task_id).sub_status == SubStatus.FAILED, 60, "refusal")
        (reply,) = state.get_messages_legacy(run_ids=[1], is_reply=True)
        assert reply.error.code == ErrorCode.INVALID_FAB
        assert [refusal["sha256"] for refusal in audit.refusals()] == [fab.hash_str]
        assert not marker.exists(), "code of the refused bundle was imported"
        assert spare.poll() is None  # it waits for the next task
    finally:
        launcher.stop()
    assert spare.wait(timeout=30) == 0


def test_a_warm_process_removes_the_bundle_folders_of_dead_processes(tmp_path: Path) -> None:
    """A warm process killed with its SuperNode leaves its bundle folder; the next one removes
    it and keeps those of live processes and anything else in the folder."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    dead, live = tmp_path / finished.stdout.strip(), tmp_path / str(os.getpid())
    other = tmp_path / "notes"
    for folder in (dead, live, other):
        (folder / "app").mkdir(parents=True)
    remove_dead_folders(tmp_path)
    assert not dead.exists() and (live / "app").is_dir() and (other / "app").is_dir()
