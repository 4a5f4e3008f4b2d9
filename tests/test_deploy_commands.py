"""Command lines FedUMIT builds for Flower: every flag exists in the installed Flower."""

from __future__ import annotations

import subprocess
import tomllib
from functools import cache
from pathlib import Path

import pytest

from deploy.connection import save_connection
from deploy.coordinator import launch_args, run_progress
from deploy.flower import executable
from deploy.nodes import SuperLinkOptions, SuperNodeOptions, superlink_command, supernode_command
from deploy.pki import Pki, add_site, init_pki
from server.config import RUN_DEFAULTS, RunConfig
from server.run_folder import RunFolder

REPO_ROOT = Path(__file__).resolve().parents[1]


@cache
def flower_help(name: str) -> str:
    """``NAME --help`` of the installed Flower."""
    argv = [executable(name), "--help"]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


def assert_flags_exist(argv: list[str]) -> None:
    """Every ``--flag`` in ``argv`` is one its executable documents."""
    text = flower_help(Path(argv[0]).name)
    for flag in (a for a in argv if a.startswith("--")):
        assert flag in text, f"{Path(argv[0]).name} has no {flag}"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A PKI with one site."""
    init_pki(tmp_path, ["link.example.org"])
    add_site(tmp_path, "hospital-a")
    return Pki(tmp_path)


def test_superlink_flags(pki: Pki, tmp_path: Path) -> None:
    argv = superlink_command(SuperLinkOptions(pki=pki, database=tmp_path / "db" / "link.db"))
    assert_flags_exist(argv)
    assert "--enable-supernode-auth" in argv and "--insecure" not in argv
    assert "--disable-runtime-dependency-installation" in argv
    assert argv[argv.index("--database") + 1] == str(tmp_path / "db" / "link.db")
    assert argv[argv.index("--host") + 1] == "127.0.0.1"  # the Control API stays on loopback
    insecure = superlink_command(
        SuperLinkOptions(pki=None, database=tmp_path / "x.db", insecure=True)
    )
    assert "--insecure" in insecure and "--enable-supernode-auth" not in insecure
    with pytest.raises(ValueError, match="--pki"):
        superlink_command(SuperLinkOptions(pki=None, database=tmp_path / "x.db"))


def test_supernode_flags_and_node_config(pki: Pki, tmp_path: Path) -> None:
    site = tmp_path / "site a.toml"
    site.write_text("")
    options = SuperNodeOptions(
        site, "link.example.org:8000", pki.ca_cert, pki.site_key("hospital-a")
    )
    argv = supernode_command(options)
    assert_flags_exist(argv)
    assert "--allow-runtime-dependency-installation" not in argv and "--insecure" not in argv
    # No app runs inside the SuperNode: the site's executor runs approved bundles only.
    assert argv[argv.index("--isolation") + 1] == "process"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--node-config") + 1] == f"site-config='{site.resolve()}'"
    with pytest.raises(ValueError, match="--auth-key"):
        supernode_command(SuperNodeOptions(site, "h:1", pki.ca_cert, None))


def test_supernode_runs_the_warm_executor_unless_told_cold(tmp_path: Path) -> None:
    from deploy.site_process import executor_command
    from fedumit.cli import build_parser

    def executor_module(*flags: str) -> str:
        args = build_parser().parse_args(["supernode", "--site", "s.toml", *flags])
        argv = executor_command(args.warm, "127.0.0.1:9094", tmp_path, tmp_path / "a", parent=1)
        return argv[argv.index("-m") + 1]

    assert executor_module() == executor_module("--warm") == "deploy.warm_executor"
    assert executor_module("--cold") == "deploy.site_executor"
    with pytest.raises(SystemExit):
        executor_module("--warm", "--cold")


def test_task_input_timeout_reaches_the_clientapp_processes(tmp_path: Path) -> None:
    from deploy.site_executor import runner_command
    from deploy.site_process import TASK_INPUT_SECONDS, executor_command, site_arguments
    from deploy.warm_executor import WarmLauncher
    from fedumit.cli import build_parser

    def timeout(argv: list[str]) -> float:  # argv: python -m MODULE ARGS...
        return site_arguments("a site process").parse_known_args(argv[3:])[0].input_timeout

    def parsed(*flags: str) -> float:
        args = build_parser().parse_args(["supernode", "--site", "s.toml", *flags])
        return args.task_input_timeout

    assert parsed() == TASK_INPUT_SECONDS
    site = ("127.0.0.1:9094", tmp_path, tmp_path / "a")
    chosen = parsed("--task-input-timeout", "90")
    for warm in (True, False):
        assert timeout(executor_command(warm, *site, parent=1, input_timeout=chosen)) == 90
    assert timeout(WarmLauncher(*site, input_timeout=45).argv) == 45
    assert timeout(runner_command(site[0], "token", *site[1:], input_timeout=45)) == 45
    for bad in ("0", "-5", "nan", "soon"):
        with pytest.raises(SystemExit):
            parsed("--task-input-timeout", bad)


def test_node_config_key_is_the_one_the_client_app_reads() -> None:
    from client.app import NODE_SITE_CONFIG
    from deploy.nodes import NODE_SITE_CONFIG as DEPLOY_KEY

    assert DEPLOY_KEY == NODE_SITE_CONFIG


def test_launch_passes_run_config_and_resume(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "runs" / "r1").create({"run": {}})
    args = launch_args(REPO_ROOT, "fed", ["align.rounds=1"], folder.root, stream=True)
    assert args[:3] == ["run", str(REPO_ROOT), "fed"] and args[-1] == "--stream"
    assert f"resume='{folder.root.resolve()}'" in args and "align.rounds=1" in args
    with pytest.raises(FileNotFoundError):
        launch_args(REPO_ROOT, "fed", [], tmp_path, stream=False)


def test_launch_refuses_an_app_flwr_would_rewrite(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.flwr.federations]\ndefault = 'x'\n")
    with pytest.raises(ValueError, match="federations"):
        launch_args(tmp_path, "fed", [], None, stream=False)
    assert "federations" in (tmp_path / "pyproject.toml").read_text()


def test_connection_is_written_to_flower_config(tmp_path: Path, monkeypatch, pki: Pki) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    save_connection("one", "a:1", pki.ca_cert)
    path = save_connection("two", "b:2", None, insecure=True)
    config = tomllib.loads(path.read_text())["superlink"]
    assert config["one"] == {"address": "a:1", "root-certificates": str(pki.ca_cert.resolve())}
    assert config["two"] == {"address": "b:2", "insecure": True}
    with pytest.raises(ValueError):
        save_connection("three", "c:3", None)


def test_run_progress_reads_the_last_round(tmp_path: Path) -> None:
    config = RunConfig.from_flat({**RUN_DEFAULTS, "align.rounds": 2, "instruct.rounds": 3})
    folder = RunFolder(tmp_path / "r").create({"run": config.to_dict()})
    assert run_progress(folder.root).describe() == "run r: no round finished yet"
    for stage, server_round in (("align", 0), ("align", 1), ("align", 2), ("instruct", 1)):
        folder.append_metrics({"stage": stage, "round": server_round})
    assert run_progress(folder.root).describe() == "run r: stage instruct, round 1/3"


def test_proxy_config_publishes_the_fleet_api_of_a_loopback_superlink(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedumit.cli import main as fedumit_main

    args = ["proxy-config", "--pki", str(tmp_path), "--listen", "203.0.113.10:8000"]
    assert fedumit_main([*args, "--superlink", "0.0.0.0:8000"]) == 2
    assert "the SuperLink must listen on loopback" in capsys.readouterr().err
    assert fedumit_main(args) == 0
    block = capsys.readouterr().out
    assert "listen 203.0.113.10:8000 ssl;" in block
    assert "location /v1/fleet/ {\n        proxy_pass https://127.0.0.1:8000;" in block
    assert "location / {\n        return 403;" in block
