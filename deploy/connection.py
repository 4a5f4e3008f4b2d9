"""SuperLink connections in Flower's own config file (``$FLWR_HOME/config.toml``).

Flower 1.42's ``flwr`` CLI names a SuperLink by a connection in that file
(``[superlink.NAME] address, root-certificates, insecure``); FedUMIT's ``--federation NAME``
is such a connection, written here when ``--superlink`` is given.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import tomli_w

from deploy.pki import write_file


def flower_home() -> Path:
    """Flower's home folder: ``$FLWR_HOME`` or ``~/.flwr``."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")


def save_connection(
    name: str, superlink: str, root_cert: Path | None, insecure: bool = False
) -> Path:
    """Add or replace connection ``name`` (other connections stay); return the config path."""
    if root_cert is None and not insecure:
        raise ValueError("a SuperLink connection needs --root-cert (or --pki), or --insecure")
    path = flower_home() / "config.toml"
    config = tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    entry: dict[str, object] = {"address": superlink}
    if insecure:
        entry["insecure"] = True
    else:
        entry["root-certificates"] = str(Path(root_cert).resolve())
    config.setdefault("superlink", {})[name] = entry
    write_file(path, tomli_w.dumps(config).encode(), force=True)
    return path


def connection_address(name: str) -> tuple[str, bool]:
    """Connection ``name``'s SuperLink address and whether it is insecure (no TLS)."""
    path = flower_home() / "config.toml"
    config = tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    entry = config.get("superlink", {}).get(name)
    if not isinstance(entry, dict) or "address" not in entry:
        raise ValueError(f"no SuperLink connection {name!r} in {path}: give --superlink")
    return str(entry["address"]), bool(entry.get("insecure", False))
