"""Real Flower processes on loopback for the deployment tests: start, wait, always stop."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.config import load_site_config
from deploy.approvals import SiteApprovals
from deploy.bundles import MANIFEST, Bundle
from deploy.pki import add_site, init_pki
from server.checkpoints import checkpoint_path
from server.run_folder import RunFolder
from simulations.runner import write_site_config

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def app_snapshot(folder: Path) -> tuple[Path, Bundle]:
    """This checkout's app as ``flwr run`` bundles it, unpacked into ``folder/fedumit``, and the
    bundle: launching from the snapshot sends that bundle however the checkout changes."""
    from flwr.cli.build import build_fab_from_disk

    bundle = Bundle(build_fab_from_disk(REPO_ROOT))
    app = folder / "fedumit"
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as archive:
        archive.extractall(app)
    shutil.rmtree(app / Path(MANIFEST).parent)
    return app, bundle


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

    def tails(self, lines: int = 30) -> str:
        """The last ``lines`` lines of every process's log, for a failure's report."""
        tails = []
        for log in sorted(self.logs.glob("*.log")):
            last = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append("\n".join([f"--- {log.stem} ---", *last]))
        return "\n".join(tails)

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

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL the process group at once, as a crash or a power cut would."""
        _kill_group_leftovers(process.pid)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        """Stop every process this test started, newest first."""
        for process in reversed(self.started):
            self.stop(process)


def _kill_group_leftovers(group: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def flwr_output(env: dict[str, str], *args: str) -> str:
    """What one ``flwr`` command printed (it must exit 0 within a minute)."""
    from deploy.flower import executable

    argv = [executable("flwr"), *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def supernodes(env: dict[str, str], federation: str) -> list[dict[str, str]]:
    """The SuperLink's SuperNodes as ``flwr supernode list`` reports them."""
    from deploy.coordinator import site_rows

    return site_rows(flwr_output(env, "supernode", "list", federation, "--format", "json"))


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
) -> float:
    """Poll ``condition`` every ``interval`` seconds until true, or fail naming ``what``;
    returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        if condition():
            return time.monotonic() - started
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


@dataclass
class Consortium:
    """A SuperLink (TLS, SuperNode auth) and hospitals' SuperNodes as real processes on
    loopback, with the ``fedumit`` commands a coordinator runs against them."""

    root: Path
    processes: Processes
    model_spec: Path
    federation: str = "consortium"
    run_id: str = "run"
    port: int = field(default_factory=free_port)
    sites: dict[str, list[str]] = field(default_factory=dict)  # name -> SuperNode argv
    site_configs: dict[str, Path] = field(default_factory=dict)  # name -> site config TOML
    nodes: dict[str, subprocess.Popen] = field(default_factory=dict)  # name -> SuperNode
    link: subprocess.Popen | None = None
    app: Path = REPO_ROOT  # what launch sends: the snapshot that start() takes ...
    bundle: Bundle | None = None  # ... and its bundle, which every site that joins approves
    fleet_port: int | None = None  # a reverse proxy's port in front of the SuperLink's
    supernode_flags: tuple[str, ...] = ()  # added to each ``fedumit supernode`` (``--cold``)
    site_flags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> its own

    @property
    def pki(self) -> Path:
        """The consortium PKI folder."""
        return self.root / "pki"

    @property
    def fleet_address(self) -> str:
        """Where SuperNodes reach the Fleet API: the SuperLink, or the proxy in front of it."""
        return f"127.0.0.1:{self.fleet_port or self.port}"

    @property
    def run_folder(self) -> Path:
        """The run folder ``launch`` writes."""
        return self.root / "runs" / self.run_id

    def fedumit(self, *args: str) -> str:
        """Run one ``fedumit`` command to completion; what it printed."""
        done = subprocess.run(
            fedumit_argv(*args), env=self.processes.env, capture_output=True, text=True,
            timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def start_superlink(self, name: str, host: str = "127.0.0.1") -> subprocess.Popen:
        """``fedumit superlink`` on this consortium's port and database, bound to ``host``;
        waits until it serves TLS with the consortium's certificate on loopback."""
        argv = fedumit_argv(
            "superlink", "--pki", str(self.pki), "--database", str(self.root / "link.db"),
            "--host", host, "--port", str(self.port),
        )  # fmt: skip
        link = self.processes.start(name, argv, cwd=self.root)
        wait_for(
            lambda: serves_tls(self.port, self.pki / "ca.crt") or link.poll() is not None,
            60,
            name,
        )
        assert link.poll() is None, self.processes.log(name)
        self.link = link
        return link

    def join(self, archive: Path) -> None:
        """Give hospital ``archive.name`` a key, register it and start its SuperNode."""
        name = archive.name
        add_site(self.pki, name)
        self.fedumit(
            "pki", "register", name, "--out", str(self.pki), "--federation", self.federation,
            "--superlink", f"127.0.0.1:{self.port}",
        )  # fmt: skip
        site = self.site_configs[name] = write_site_config(
            self.root / "sites" / f"{name}.toml",
            name=name,
            archive=archive,
            work_dir=self.root / "work" / name,
            model_spec=self.model_spec,
        )
        if self.bundle is not None:
            SiteApprovals(self.root / "work" / name).approve(self.bundle)
        self.sites[name] = fedumit_argv(
            "supernode", "--site", str(site), "--superlink", self.fleet_address,
            "--pki", str(self.pki), "--runtime-port", str(free_port()), *self.supernode_flags,
            *self.site_flags.get(name, ()),
        )  # fmt: skip
        self.start_site(name)

    def start_site(self, name: str, suffix: str = "") -> None:
        """Start (or restart) hospital ``name``'s SuperNode; logged as ``name[-suffix]``."""
        log = f"{name}-{suffix}" if suffix else name
        self.nodes[name] = self.processes.start(log, self.sites[name], cwd=self.root)

    def ledger(self, name: str) -> bytes:
        """Hospital ``name``'s privacy ledger as it is on disk."""
        path = load_site_config(self.site_configs[name]).ledger_path
        return path.read_bytes() if path.is_file() else b""

    def supernodes(self) -> list[dict[str, str]]:
        """The SuperNodes as the SuperLink lists them."""
        return supernodes(self.processes.env, self.federation)

    def statuses(self) -> list[str]:
        """Each SuperNode's status as the SuperLink lists it."""
        return [node["status"] for node in self.supernodes()]

    def runs(self) -> dict[str, str]:
        """Each run's status as the SuperLink lists it (``running``, ``finished:failed`` ...),
        by Flower run id."""
        from deploy.flower import flwr_answer

        listed = flwr_output(self.processes.env, "ls", self.federation, "--format", "json")
        return {run["run-id"]: run["status"] for run in flwr_answer(listed, "list runs")["runs"]}

    def server_logs(self, lines: int = 40) -> str:
        """The last ``lines`` lines of each run's ServerApp log, as the SuperLink keeps it."""
        logs, env = [], self.processes.env
        for run_id, status in self.runs().items():
            shown = flwr_output(env, "log", run_id, self.federation, "--show").splitlines()
            logs.append("\n".join([f"--- run {run_id} ({status}) ---", *shown[-lines:]]))
        return "\n".join(logs)

    def launch(self, run_config: str, app: Path | None = None) -> None:
        """``fedumit launch`` the app in ``app`` (default: the one the sites approved) with
        ``run_config`` overrides (detached)."""
        app = app or self.app
        where = f"run-dir='{self.root / 'runs'}' run-id='{self.run_id}' "
        self.fedumit(
            "launch", "--federation", self.federation, "--app", str(app),
            "--run-config", f"{where} model-spec='{self.model_spec}' {run_config}",
        )  # fmt: skip

    def resume(self, launch_id: str | None = None) -> None:
        """``fedumit launch --resume`` of this consortium's run folder, nothing else given but
        the launch's id (default: ``fedumit launch``'s own)."""
        chosen = ("--launch-id", launch_id) if launch_id else ()
        self.fedumit(
            "launch", "--federation", self.federation, "--app", str(self.app),
            "--resume", str(self.run_folder), *chosen,
        )  # fmt: skip

    def records(self) -> list[dict[str, Any]]:
        """The run's complete ``metrics.jsonl`` records so far."""
        return RunFolder(self.run_folder).metrics()

    def record(self, stage: str, server_round: int) -> dict[str, Any] | None:
        """The record of one round, if written."""
        found = [r for r in self.records() if (r["stage"], r["round"]) == (stage, server_round)]
        return found[-1] if found else None

    def checkpointed(self, stage: str, server_round: int) -> bool:
        """Whether the global adapter of that round is checkpointed."""
        return checkpoint_path(self.run_folder / "checkpoints", stage, server_round).is_file()

    def trains_received(self, name: str) -> int:
        """Train messages hospital ``name``'s SuperNode has taken so far (its log)."""
        return self.processes.log(name).count("Receiving: train message")

    def start(self, archives: list[Path]) -> None:
        """A snapshot of this checkout's app that every site approves, a fresh PKI, the
        SuperLink and one registered SuperNode per archive, all online."""
        self.app, self.bundle = app_snapshot(self.root / "app")
        init_pki(self.pki, ["localhost"])
        self.start_superlink("superlink")
        for archive in archives:
            self.join(archive)
        wait_for(lambda: self.statuses() == ["online"] * len(archives), 120, "every site online")
