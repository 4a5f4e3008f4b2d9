"""``flwr run . local-simulation``: FedUMIT as a plain Flower app in Flower's local simulation.

Flower 1.42 keeps SuperLink connections in ``$FLWR_HOME/config.toml``; a connection whose
address is ``:local:`` makes ``flwr run`` start a local SuperLink in simulation mode (detached:
it outlives ``flwr run``, so the test stops it) and the simulation's size comes with the run
(``--federation-config "num-supernodes=2"``; ``options.*`` in the connection are deprecated).
Each virtual SuperNode is the site of entry ``partition-id`` of the run config's
``simulation-sites``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.flower import executable, flower_env
from server.run_folder import RunFolder
from tests.deploy_fixtures import Processes, free_port, running
from tests.simulation_fixtures import TINY_SCHEDULE, run_config_text, tiny_sites

CONNECTION = "local-simulation"
FLOWER_CONFIG = f"""[superlink]
default = "{CONNECTION}"

[superlink.{CONNECTION}]
address = ":local:"
"""
RUN_TIMEOUT = 240.0


def local_superlinks(home: Path) -> list[int]:
    """Pids of the local SuperLinks ``flwr run`` started for the Flower home ``home``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
            if "--simulation" in argv and any(a.startswith(str(home)) for a in argv):
                pids.append(int(cmdline.parent.name))
    return pids


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_group(pid: int) -> None:
    """SIGTERM the process group of ``pid`` (a session leader), SIGKILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + 10.0
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not alive(pid):
            return


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """A private Flower home with the local simulation connection; whatever runs in it is
    stopped at the end, the local SuperLink that ``flwr run`` detached included."""
    with running(tmp_path) as started:
        home = Path(started.env["FLWR_HOME"])
        home.mkdir()
        (home / "config.toml").write_text(FLOWER_CONFIG, encoding="utf-8")
        started.env.update(flower_env(started.env))
        started.env.update(
            FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()),
            FLWR_LOCAL_CONTROL_API_PORT=str(free_port()),
            # The app runs in this environment; no per-run `uv sync` of its dependencies.
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        )
        try:
            yield started
        finally:
            for pid in local_superlinks(home):
                stop_group(pid)


@pytest.mark.slow
def test_flwr_run_in_a_local_simulation_writes_the_run_folder(
    tmp_path: Path, processes: Processes, tiny_base: Path
) -> None:
    from shared_model.tiny import SPEC_FILE

    sites = tiny_sites(tmp_path, tiny_base / SPEC_FILE)
    overrides = {
        **TINY_SCHEDULE,
        "model-spec": str(tiny_base / SPEC_FILE),
        "run-dir": str(tmp_path / "runs"),
        "run-id": "flwr-run",
        "simulation-sites": ",".join(str(s) for s in sites),
        "align.rounds": 1,
        "instruct.rounds": 1,
        "align.local-steps": 1,
        "instruct.local-steps": 1,
    }
    argv = [
        executable("flwr"), "run", ".", CONNECTION, "--stream",
        "--federation-config", "num-supernodes=2",
        "--run-config", run_config_text(overrides),
    ]  # fmt: skip
    flwr = processes.start("flwr-run", argv)
    flwr.wait(timeout=RUN_TIMEOUT)
    assert flwr.returncode == 0, processes.log("flwr-run")
    folder = RunFolder(tmp_path / "runs" / "flwr-run")
    assert (folder.root / "export").is_dir(), processes.log("flwr-run")
    assert sorted(p.name for p in folder.checkpoints.iterdir()) == [
        "align-round-0001.safetensors",
        "instruct-round-0001.safetensors",
    ]
    records = [(m["stage"], m["round"]) for m in folder.metrics()]
    assert records == [("align", 0), ("align", 1), ("instruct", 0), ("instruct", 1)]
    assert all(len(m["sites"]) == 2 for m in folder.metrics() if m["round"] > 0)
    assert len(local_superlinks(Path(processes.env["FLWR_HOME"]))) == 1
