"""Real Flower processes on loopback for the deployment tests: start, wait, always stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fedumit_argv(*args: str) -> list[str]:
    """argv that runs ``fedumit`` from this checkout."""
    return [sys.executable, "-m", "fedumit.cli", *args]


class Processes:
    """Processes a test started, each in its own process group, logged to files."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], cwd: Path = REPO_ROOT) -> subprocess.Popen:
        """Start ``argv`` in a new session; its output goes to ``logs/<name>.log``."""
        log = (self.logs / f"{name}.log").open("w")
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        """What process ``name`` printed so far."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self, process: subprocess.Popen) -> None:
        """SIGTERM the process group, SIGKILL what is left after a grace period."""
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=grace)
                _kill_group_leftovers(process.pid)
                break
            except subprocess.TimeoutExpired:
                continue

    def stop_all(self) -> None:
        """Stop every process this test started, newest first."""
        for process in reversed(self.started):
            self.stop(process)


def _kill_group_leftovers(group: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def flower_env(home: Path) -> dict[str, str]:
    """Environment with a private Flower home (the user's ~/.flwr stays untouched)."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
    )
    return env


@contextlib.contextmanager
def running(tmp_path: Path) -> Iterator[Processes]:
    """Processes started inside the block, all stopped when it ends, pass or fail."""
    logs = tmp_path / "logs"
    logs.mkdir()
    started = Processes(logs, flower_env(tmp_path / "flwr-home"))
    try:
        yield started
    finally:
        started.stop_all()


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5
) -> None:
    """Poll ``condition`` every ``interval`` seconds until true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def tls_handshake(port: int, ca_file: Path) -> None:
    """Open a TLS connection to 127.0.0.1:port trusting only ``ca_file`` (raises on failure)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass


def serves_tls(port: int, ca_file: Path) -> bool:
    """Whether the SuperLink on ``port`` completes a verified TLS handshake."""
    try:
        tls_handshake(port, ca_file)
    except OSError:
        return False
    return True
