"""A Grid that counts the bytes of every message each way, per site, and keeps the replies.

Secure aggregation's four protocol steps talk to the Grid themselves (Flower's
``SecAggPlusWorkflow``), so the round's traffic is counted here; the cost benchmark wraps plain
FedAvg's rounds in it too, to count both the same way (every record: arrays, metrics, configs).
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, Message
from flwr.serverapp import Grid


def message_bytes(message: Message) -> int:
    """Bytes of every record a message carries (0 for an error): arrays' data, and each config
    or metric key and value (numbers 8 bytes, text and bytes their length, lists their items),
    as Flower's ``count_bytes`` counts them (which fails on an empty string)."""
    if message.has_error() or not message.has_content():
        return 0
    return sum(
        record.count_bytes()
        if isinstance(record, ArrayRecord)
        else sum(len(key) + _value_bytes(value) for key, value in record.items())
        for record in message.content.values()
    )


def _value_bytes(value: object) -> int:
    if isinstance(value, list):
        return sum(_value_bytes(item) for item in value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, str | bytes):
        return len(value)
    return 8


class CountingGrid(Grid):
    """Wraps a Grid: ``sent`` / ``received`` bytes per node id, ``replies`` in arrival order,
    and how many ``messages`` were sent."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.messages = 0
        self.sent: dict[int, int] = {}
        self.received: dict[int, int] = {}
        self.replies: list[Message] = []
        self.destinations: dict[str, int] = {}  # message id -> node it was sent to

    def set_run(self, run_id: int) -> None:
        """Delegated."""
        self.grid.set_run(run_id)

    @property
    def run(self):
        """Delegated."""
        return self.grid.run

    def create_message(self, *args, **kwargs) -> Message:
        """Delegated."""
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        """Delegated."""
        return self.grid.get_node_ids()

    def get_nodes(self):
        """Delegated."""
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push, counting each message's bytes against its destination."""
        messages = list(messages)
        sizes = [message_bytes(message) for message in messages]
        ids = list(self.grid.push_messages(messages))
        self._count_sent(messages, sizes)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull, counting each reply's bytes against its site."""
        replies = list(self.grid.pull_messages(message_ids))
        self._count_received(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send and wait, counting both ways."""
        messages = list(messages)
        sizes = [message_bytes(message) for message in messages]
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self._count_sent(messages, sizes)
        self._count_received(replies)
        return replies

    def site_of(self, reply: Message) -> int:
        """The node a reply answers for (the one its message went to, also for an error the
        SuperLink answers in place of a site)."""
        return self.destinations.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)

    def _count_sent(self, messages: list[Message], sizes: list[int]) -> None:
        """Note each pushed message's destination (by the id the push gave it) and bytes."""
        self.messages += len(messages)
        for message, size in zip(messages, sizes, strict=True):
            node = message.metadata.dst_node_id
            self.destinations[message.metadata.message_id] = node
            self.sent[node] = self.sent.get(node, 0) + size

    def _count_received(self, replies: list[Message]) -> None:
        for reply in replies:
            node = self.site_of(reply)
            self.received[node] = self.received.get(node, 0) + message_bytes(reply)
            self.replies.append(reply)
