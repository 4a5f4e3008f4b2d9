"""Which site each Flower node is, so that logs, metrics, plots and the model card name sites.

A Flower node id (``1350261974513123633``) says nothing to a person, and changes when a site's
key is rotated. The name the coordinator registered for a node's key (``fedumit pki register
NAME`` runs ``flwr supernode register --name NAME``) is the coordinator's own knowledge: the
SuperLink reports it with each node, and it always wins. Nodes the SuperLink knows no name for
(Flower's simulation registers none) go by the ``site`` field of their replies' meta, the fixed
``[site] name`` of the site's config, unless another node already goes by that name. A node
named neither way goes by ``node <id>``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flwr.app import Message

from protocol import META, SITE_NAME

if TYPE_CHECKING:
    from flwr.proto.node_pb2 import NodeInfo

log = logging.getLogger(__name__)


class SiteNames:
    """Node id to site name, learnt from the SuperLink's registrations and the sites' replies."""

    def __init__(self) -> None:
        self._registered: dict[int, str] = {}
        self._claimed: dict[int, str] = {}
        self._noted: set[tuple[int, str]] = set()  # (node, claim) already warned about

    def learn(self, nodes: Iterable[NodeInfo]) -> None:
        """Take the names the SuperLink holds for its nodes (registered with ``--name``)."""
        for node in nodes:
            if node.name and SITE_NAME.match(node.name):
                self._registered[node.node_id] = node.name

    def note_reply(self, node: int, reply: Message) -> None:
        """Take the site name a reply gives, if its node has none yet and the name is free."""
        if reply.has_error() or META not in reply.content:
            return
        claim = reply.content[META].get("site")
        if not isinstance(claim, str) or not claim or self._claimed.get(node) == claim:
            return
        problem = self._problem(node, claim)
        if problem is None:
            self._claimed[node] = claim
        elif (node, claim) not in self._noted:
            self._noted.add((node, claim))
            log.warning("node %d says it is site %r, but %s", node, claim[:80], problem)

    def name(self, node: int) -> str:
        """The node's site name, ``node <id>`` when it has none."""
        return self._registered.get(node) or self._claimed.get(node) or f"node {node}"

    def describe(self, node: int) -> str:
        """Name and node id, for the log."""
        name = self.name(node)
        return name if name.startswith("node ") else f"{name} (node {node})"

    def _problem(self, node: int, claim: str) -> str | None:
        """Why a claimed name is not taken, ``None`` when it is."""
        if not SITE_NAME.match(claim):
            return "that is not a site name (letters, digits, '.', '_', '-'; at most 64)"
        registered = self._registered.get(node)
        if registered is not None:
            return None if claim == registered else f"it is registered as {registered!r}"
        taken = {**self._claimed, **self._registered}
        if any(other != node and name == claim for other, name in taken.items()):
            return "another node goes by that name; this one goes by its node id"
        return None
