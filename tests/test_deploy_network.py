"""A SuperLink with TLS and SuperNode authentication, real processes on loopback."""

from __future__ import annotations

import http.client
import ssl
import subprocess
from pathlib import Path

import pytest

from deploy.pki import add_site, init_pki
from simulations.runner import write_site_config
from tests.deploy_fixtures import (
    Processes,
    fedumit_argv,
    free_port,
    serves_tls,
    supernodes,
    tls_handshake,
    wait_for,
)

pytestmark = pytest.mark.slow

FEDERATION = "consortium"


@pytest.fixture
def flower_env(processes: Processes) -> dict[str, str]:
    """The environment of this test's Flower processes and CLI calls."""
    return processes.env


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A consortium PKI with two sites' keys (only hospital-a gets registered)."""
    root = tmp_path / "pki"
    init_pki(root, ["localhost", "127.0.0.1"])
    for name in ("hospital-a", "hospital-b"):
        add_site(root, name)
    return root


@pytest.fixture
def superlink(processes: Processes, pki: Path, tmp_path: Path) -> int:
    """A running SuperLink (TLS, SuperNode auth, database on disk); its port."""
    port = free_port()
    argv = fedumit_argv(
        "superlink", "--pki", str(pki), "--database", str(tmp_path / "state" / "link.db"),
        "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    link = processes.start("superlink", argv)
    wait_for(
        lambda: serves_tls(port, pki / "ca.crt") or link.poll() is not None, 60, "the SuperLink"
    )
    assert link.poll() is None, processes.log("superlink")
    return port


def site_config(tmp_path: Path, name: str) -> Path:
    """A site config (the network tests never read its archive)."""
    archive = tmp_path / "archives" / name
    archive.mkdir(parents=True)
    return write_site_config(
        tmp_path / "sites" / f"{name}.toml",
        name=name,
        archive=archive,
        work_dir=tmp_path / "work" / name,
        model_spec=tmp_path / "model.toml",
    )


def fedumit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run one ``fedumit`` command to completion."""
    return subprocess.run(
        fedumit_argv(*args), env=env, capture_output=True, text=True, timeout=120, check=False
    )


def nodes(env: dict[str, str]) -> list[dict[str, str]]:
    """This test's SuperNodes as the SuperLink lists them."""
    return supernodes(env, FEDERATION)


def test_registered_site_joins_and_unregistered_key_cannot(
    superlink: int, pki: Path, processes: Processes, flower_env: dict[str, str], tmp_path: Path
) -> None:
    address = f"127.0.0.1:{superlink}"
    registered = fedumit(
        flower_env, "pki", "register", "hospital-a", "--out", str(pki),
        "--federation", FEDERATION, "--superlink", address,
    )  # fmt: skip
    assert registered.returncode == 0, registered.stdout + registered.stderr
    [node] = nodes(flower_env)
    assert node["status"] == "registered"

    def supernode(name: str) -> subprocess.Popen:
        argv = fedumit_argv(
            "supernode", "--site", str(site_config(tmp_path, name)), "--superlink", address,
            "--pki", str(pki), "--runtime-port", str(free_port()),
        )  # fmt: skip
        return processes.start(name, argv)

    member, stranger = supernode("hospital-a"), supernode("hospital-b")
    wait_for(lambda: nodes(flower_env)[0]["status"] == "online", 60, "hospital-a online")
    assert member.poll() is None, processes.log("hospital-a")
    assert stranger.wait(timeout=60) != 0
    assert "Failed to activate SuperNode" in processes.log("hospital-b")
    assert [n["status"] for n in nodes(flower_env)] == ["online"]
    status = fedumit(flower_env, "status", "--federation", FEDERATION, "--run-dir", str(tmp_path))
    assert "1 of 1 sites online" in status.stdout, status.stdout + status.stderr


def test_client_without_the_consortium_ca_cannot_connect(
    superlink: int, pki: Path, flower_env: dict[str, str], tmp_path: Path
) -> None:
    tls_handshake(superlink, pki / "ca.crt")  # the consortium CA verifies the SuperLink
    other = tmp_path / "other-pki"
    init_pki(other, ["localhost", "127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(superlink, other / "ca.crt")
    listed = fedumit(
        flower_env, "status", "--federation", "stranger", "--run-dir", str(tmp_path),
        "--superlink", f"127.0.0.1:{superlink}", "--root-cert", str(other / "ca.crt"),
    )  # fmt: skip
    assert listed.returncode != 0, listed.stdout + listed.stderr


def test_plaintext_client_is_refused(
    superlink: int, flower_env: dict[str, str], tmp_path: Path
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", superlink, timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        connection.request("POST", "/v1/fleet/register-node", body=b"")
        connection.getresponse()
    connection.close()
    listed = fedumit(
        flower_env, "status", "--federation", "plain", "--run-dir", str(tmp_path),
        "--superlink", f"127.0.0.1:{superlink}", "--insecure",
    )  # fmt: skip
    assert listed.returncode != 0
    assert "INSECURE MODE" in listed.stderr
