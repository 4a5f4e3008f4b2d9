"""Only the coordinator's host reaches the Control API: real processes on loopback.

A SuperLink (TLS, SuperNode authentication) bound to loopback behind a real nginx configured by
``fedumit proxy-config``: a hospital's SuperNode joins through the proxy (the Fleet path is
allowed) while the Control API through the proxy is refused, and ``fedumit status`` stays quiet.
A SuperLink bound to every address makes ``fedumit status`` warn that its Control API answers
on a non-loopback address.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.exposure import control_api_answers, local_addresses
from deploy.pki import init_pki
from fedumit.cli import main as fedumit_main
from simulations.synthetic import generate_consortium
from tests.deploy_fixtures import REPO_ROOT, Consortium, fedumit_argv, free_port, running, wait_for

pytestmark = pytest.mark.slow
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_config(folder: Path, server_block: str) -> Path:
    """A whole nginx config around ``server_block``, with every file inside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "nginx.conf"
    config.write_text(
        f"daemon off;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'};\n"
        "events {}\nhttp {\n"
        f"access_log {folder / 'access.log'};\n"
        + "".join(f"{kind}_temp_path {folder / kind};\n" for kind in ("client_body", "proxy"))
        + "".join(f"{kind}_temp_path {folder / kind};\n" for kind in ("fastcgi", "uwsgi", "scgi"))
        + server_block
        + "}\n",
        encoding="utf-8",
    )
    return config


def launch_through(c: Consortium, address: str) -> subprocess.CompletedProcess[str]:
    """``fedumit launch`` of the app against the SuperLink at ``address``."""
    argv = fedumit_argv(
        "launch", "--federation", "through-" + address.replace(":", "-"), "--superlink", address,
        "--root-cert", str(c.pki / "ca.crt"), "--app", str(REPO_ROOT),
    )  # fmt: skip
    return subprocess.run(argv, env=c.processes.env, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(
    not Path(NGINX).is_file(), reason="nginx is not installed (.ci/run installs it)"
)
def test_hospitals_reach_the_fleet_api_through_the_proxy_and_not_the_control_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [archive] = generate_consortium(tmp_path / "archives", n_sites=1, patients=2, seed=0)
    with running(tmp_path) as processes:
        c = Consortium(
            tmp_path, processes, tmp_path / "model.toml", "rights", fleet_port=free_port()
        )
        init_pki(c.pki, ["localhost"])
        c.start_superlink("superlink")
        assert fedumit_main(
            ["proxy-config", "--pki", str(c.pki), "--listen", c.fleet_address,
             "--superlink", f"127.0.0.1:{c.port}"]
        ) == 0  # fmt: skip
        config = nginx_config(tmp_path / "nginx", capsys.readouterr().out)
        nginx = processes.start("nginx", [NGINX, "-c", str(config), "-p", str(config.parent)])
        wait_for(
            lambda: (
                control_api_answers("127.0.0.1", c.fleet_port) is False and nginx.poll() is None
            ),
            30,
            "nginx",
        )

        c.join(archive)  # registered on the SuperLink directly; its SuperNode uses the proxy
        wait_for(lambda: c.statuses() == ["online"], 120, "the site online through the proxy")
        assert "POST /v1/fleet/" in (config.parent / "access.log").read_text()

        assert control_api_answers("127.0.0.1", c.port), "the SuperLink's own port must answer"
        assert not control_api_answers("127.0.0.1", c.fleet_port)
        refused = launch_through(c, c.fleet_address)
        assert refused.returncode != 0 and "Created run" not in processes.log("superlink")
        status = c.fedumit("status", "--federation", c.federation)
        assert "1 of 1 sites online" in status and "WARNING" not in status


@pytest.mark.skipif(not local_addresses(), reason="this host has no non-loopback address")
def test_status_warns_when_the_control_api_answers_beyond_loopback(tmp_path: Path) -> None:
    with running(tmp_path) as processes:
        c = Consortium(tmp_path, processes, tmp_path / "model.toml", "exposed")
        init_pki(c.pki, ["localhost"])
        c.start_superlink("superlink", host="0.0.0.0")
        assert "binding the SuperLink to 0.0.0.0 serves its Control API" in processes.log(
            "superlink"
        )
        status = c.fedumit(
            "status", "--federation", c.federation, "--superlink", f"127.0.0.1:{c.port}",
            "--root-cert", str(c.pki / "ca.crt"),
        )  # fmt: skip
        exposed = [a for a in local_addresses() if f"answers on {a}:{c.port}" in status]
        assert exposed and "WARNING: the SuperLink's Control API" in status, status
