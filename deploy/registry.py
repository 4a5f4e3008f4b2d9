"""Sites' keys on the SuperLink, through Flower's own CLI: register one, rotate it.

``flwr supernode register KEY CONNECTION --name NAME`` answers with the node id the SuperLink
gives that key; FedUMIT keeps it beside the key (``sites/NAME.node``), because Flower 1.42's
``flwr supernode list`` shows neither a node's key nor its name, and rotating a key means
unregistering the node of the old one (``flwr supernode unregister NODE_ID CONNECTION``). An
unregistered key can no longer connect; the SuperLink gives the new key a new node id under the
same name, which is the name the server reports the site by.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploy.flower import flwr_answer, run_flwr
from deploy.pki import Pki, PkiError, write_file, write_site_key_pair


@dataclass(frozen=True)
class Rotation:
    """A rotated site key: the node the old key had and the node of the new one."""

    name: str
    old_node: int
    new_node: int


def register_site(pki: Pki, name: str, federation: str) -> int:
    """Register ``name``'s public key (``sites/NAME.pub``) under its name; its node id."""
    public_key = pki.site_public_key(name)
    if not public_key.is_file():
        raise FileNotFoundError(f"{public_key} not found (fedumit pki add-site {name})")
    node = _register(public_key, name, federation)
    _record_node(pki, name, node)
    return node


def rotate_site(pki: Pki, name: str, federation: str, public_key: Path | None = None) -> Rotation:
    """Replace ``name``'s registered key: register the new one, then unregister the old node.

    The new key is ``public_key`` (one the site made, keeping its private half) or, without
    it, a new pair made here in ``sites/``. The old public key is kept in ``sites/retired/``
    and the old private key, if here, deleted: it can no longer connect.
    """
    old_node = recorded_node(pki, name)
    staged_key = pki.site_key(name).with_name(f".{name}.new.key")
    staged_pub = pki.site_public_key(name).with_name(f".{name}.new.pub")
    if public_key is None:
        write_site_key_pair(staged_key, staged_pub, name, force=True)
    else:
        write_file(staged_pub, public_key.read_bytes(), force=True)
    try:
        new_node = _register(staged_pub, name, federation)
    except ValueError:
        staged_key.unlink(missing_ok=True)
        staged_pub.unlink(missing_ok=True)
        raise
    if pki.site_public_key(name).is_file():
        retired = pki.retired_public_key(name, old_node)
        retired.parent.mkdir(parents=True, exist_ok=True)
        pki.site_public_key(name).replace(retired)
    pki.site_key(name).unlink(missing_ok=True)
    if staged_key.is_file():
        staged_key.replace(pki.site_key(name))
    staged_pub.replace(pki.site_public_key(name))
    _record_node(pki, name, new_node)
    _unregister(old_node, federation, new_node)
    return Rotation(name, old_node, new_node)


def recorded_node(pki: Pki, name: str) -> int:
    """The node id ``fedumit pki register`` recorded for ``name``'s key."""
    path = pki.site_node(name)
    try:
        return int(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        raise PkiError(
            f"{path}: no node id recorded for {name} (it is written by `fedumit pki register`); "
            "unregister its node by hand (`flwr supernode list`, `flwr supernode unregister`) "
            f"and register a new key with `fedumit pki add-site {name} --force` and `register`"
        ) from None


def _register(public_key: Path, name: str, federation: str) -> int:
    args = ["supernode", "register", str(public_key), federation, "--name", name]
    done = run_flwr([*args, "--format", "json"], capture=True)
    answer = flwr_answer(done.stdout, f"register {public_key}", done.stderr)
    return int(answer["node-id"])


def _unregister(node: int, federation: str, new_node: int) -> None:
    args = ["supernode", "unregister", str(node), federation, "--format", "json"]
    done = run_flwr(args, capture=True)
    try:
        flwr_answer(done.stdout, f"unregister node {node}", done.stderr)
    except ValueError as error:
        raise PkiError(
            f"{error}. The new key is registered as node {new_node}; unregister the old node "
            f"by hand: flwr supernode unregister {node} {federation}"
        ) from None


def _record_node(pki: Pki, name: str, node: int) -> None:
    write_file(pki.site_node(name), f"{node}\n".encode(), force=True)
