"""Command lines of Flower's ``flower-superlink`` (coordinator) and ``flower-supernode`` (site).

Every flag is one Flower 1.42 documents in ``--help``. Both run with TLS from the consortium
PKI, SuperNode authentication, and no installation of app dependencies at run time (FedUMIT
is installed beforehand, the same version everywhere). ``--insecure`` drops TLS and
authentication and is only used when asked for by name.

A SuperNode runs with ``--isolation process``: it starts no app itself; the site's executor
(:mod:`deploy.site_executor`, started beside it) runs each ClientApp task only when the task's
app bundle is on the site's approved list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from deploy.flower import executable, toml_literal
from deploy.pki import Pki

DEFAULT_PORT = 8000  # flower-superlink's default: Fleet, Control and Runtime APIs share it
DEFAULT_RUNTIME_PORT = 9094  # flower-supernode's local Runtime API (ClientApp processes)
RUNTIME_HOST = "127.0.0.1"  # the SuperNode's Runtime API is reachable from its own host only
NODE_SITE_CONFIG = "site-config"  # the node config key client.app reads

T = TypeVar("T")


@dataclass(frozen=True)
class SuperLinkOptions:
    """What ``fedumit superlink`` starts."""

    pki: Pki | None
    database: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    insecure: bool = False


@dataclass(frozen=True)
class SuperNodeOptions:
    """What ``fedumit supernode`` starts."""

    site_config: Path
    superlink: str
    root_cert: Path | None
    auth_key: Path | None
    runtime_port: int = DEFAULT_RUNTIME_PORT
    insecure: bool = False


def superlink_command(options: SuperLinkOptions) -> list[str]:
    """argv of ``flower-superlink`` for ``options``."""
    argv = [executable("flower-superlink")]
    if options.insecure:
        argv.append("--insecure")
    else:
        pki = _required(options.pki, "--pki (or --insecure)")
        for path in (pki.ca_cert, pki.server_cert, pki.server_key):
            _must_exist(path)
        argv += ["--ssl-ca-certfile", str(pki.ca_cert)]
        argv += ["--ssl-certfile", str(pki.server_cert), "--ssl-keyfile", str(pki.server_key)]
        argv.append("--enable-supernode-auth")
    options.database.parent.mkdir(parents=True, exist_ok=True)
    argv += ["--database", str(options.database)]
    argv += ["--isolation", "subprocess", "--disable-runtime-dependency-installation"]
    argv += ["--host", options.host, "--port", str(options.port)]
    return argv


def supernode_command(options: SuperNodeOptions) -> list[str]:
    """argv of ``flower-supernode`` for ``options``."""
    site_config = options.site_config.resolve()
    _must_exist(site_config)
    argv = [executable("flower-supernode"), "--superlink", options.superlink]
    if options.insecure:
        argv.append("--insecure")
    else:
        root_cert = _required(options.root_cert, "--root-cert or --pki")
        auth_key = _required(options.auth_key, "--auth-key or --pki")
        _must_exist(root_cert)
        _must_exist(auth_key)
        argv += ["--root-certificates", str(root_cert.resolve())]
        argv += ["--auth-supernode-private-key", str(auth_key.resolve())]
    argv += ["--node-config", f"{NODE_SITE_CONFIG}={toml_literal(str(site_config))}"]
    # The site's executor runs the apps; runtime dependency installation stays off (default).
    argv += ["--isolation", "process"]
    argv += ["--host", RUNTIME_HOST, "--port", str(options.runtime_port)]
    return argv


def runtime_api_address(options: SuperNodeOptions) -> str:
    """Where the site's executor and ClientApp processes reach the SuperNode."""
    return f"{RUNTIME_HOST}:{options.runtime_port}"


def _required(value: T | None, what: str) -> T:
    if value is None:
        raise ValueError(f"missing {what}")
    return value


def _must_exist(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
