"""Real Flower messages for server tests: replies as sites build them, and a Grid whose sites
answer in this process (the only stand-in: no SuperLink)."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from protocol import ARRAYS, CONFIG, META, METRICS, STATUS_OK, from_record, to_record
from server.round_log import RoundLog
from server.rounds import stream_replies
from server.strategy import FedUmitStrategy

FINGERPRINT = "0123456789abcdef"
STAGE = "instruct"

Site = Callable[[Message], RecordDict | Error]
"""A site: the server's message in, the content of its reply (or a Flower error) out."""


@contextmanager
def serverapp_identity(run_id: int = 7) -> Iterator[None]:
    """The task identity Flower gives a ``ServerApp`` process (messages need it to be built)."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity.task_id = TaskIdentity.run_id = TaskIdentity.node_id = None


def round_config(stage: str = STAGE, fingerprint: str = FINGERPRINT) -> ConfigRecord:
    """The parts of a round's config the strategy reads."""
    return ConfigRecord({"stage": stage, "fingerprint": fingerprint, "lr": 1e-3})


def random_arrays(
    shapes: Mapping[str, tuple[int, ...]], seed: int, scale: float = 1.0
) -> OrderedDict[str, np.ndarray]:
    """Seeded float32 arrays of the given shapes, in the given order."""
    rng = np.random.default_rng(seed)
    return OrderedDict(
        (name, (rng.standard_normal(shape) * scale).astype(np.float32))
        for name, shape in shapes.items()
    )


def reply_content(
    arrays: Mapping[str, np.ndarray] | None,
    examples: float,
    message: Message,
    loss: float = 0.5,
    **meta: Any,
) -> RecordDict:
    """A train reply's content as ``client.app.handle`` builds it; ``meta`` overrides fields."""
    content = RecordDict()
    if arrays is not None:
        content[ARRAYS] = to_record(arrays)
    content[METRICS] = MetricRecord(
        {"num-examples": float(examples), "train-loss": loss, "epsilon": 1.0, "delta": 1e-5}
    )
    content[META] = reply_meta(message, **meta)
    return content


def evaluation_content(message: Message, metrics: Mapping[str, Any]) -> RecordDict:
    """An evaluate reply's content: ``<task>/<lang>/<metric>`` scores with their group counts."""
    return RecordDict({METRICS: MetricRecord(dict(metrics)), META: reply_meta(message)})


def site_name(node: int) -> str:
    """The ``[site] name`` the test site at node ``node`` has in its config."""
    return f"site-{node}"


def reply_meta(message: Message, **meta: Any) -> ConfigRecord:
    """The meta record of an ``ok`` reply to ``message``; ``meta`` overrides fields."""
    config = message.content[CONFIG]
    return ConfigRecord(
        {
            "fingerprint": str(config["fingerprint"]),
            "stage": str(config["stage"]),
            "server-round": int(config["server-round"]),
            "status": STATUS_OK,
            "reason": "",
            "stage1-hash": "",
            "site": site_name(message.metadata.dst_node_id),
            **meta,
        }
    )


def reply(message: Message, answer: RecordDict | Error) -> Message:
    """A reply to ``message`` (content or error), with the metadata Flower gives replies."""
    if isinstance(answer, Error):
        return Message(error=answer, reply_to=message)
    return Message(content=answer, reply_to=message)


class SiteGrid(Grid):
    """A Grid whose nodes are in-process sites; replies keep Flower's ids and metadata.
    ``registered`` names nodes as the SuperLink would (``flwr supernode register --name``)."""

    def __init__(self, sites: Mapping[int, Site], registered: Mapping[int, str] = ()) -> None:
        self.sites = dict(sites)
        self.registered = dict(registered)
        self.pushed: dict[str, Message] = {}
        self._ids = itertools.count()

    @property
    def run(self):
        """Not needed by the strategy."""
        raise NotImplementedError

    def set_run(self, run_id: int) -> None:
        """Not needed by the strategy."""
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        """A message to one node."""
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        """The sites' node ids."""
        return list(self.sites)

    def get_nodes(self) -> Iterable[NodeInfo]:
        """The sites' nodes, with the names they are registered under."""
        return [NodeInfo(node_id=n, name=self.registered.get(n)) for n in self.sites]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Give each message an id, as Flower's ``InMemoryGrid`` does."""
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = message_id = f"m{next(self._ids)}"
            self.pushed[message_id] = message
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterator[Message]:
        """Each site's reply to its message."""
        for message_id in message_ids:
            message = self.pushed.pop(message_id)
            yield reply(message, self.sites[message.metadata.dst_node_id](message))

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        """Push, then pull every reply."""
        return list(self.pull_messages(self.push_messages(messages)))


def run_round(
    strategy: FedUmitStrategy,
    grid: SiteGrid,
    current: Mapping[str, np.ndarray],
    server_round: int = 1,
) -> tuple[OrderedDict[str, np.ndarray], RoundLog[str]]:
    """One train round the way the coordinator drives it: configure, stream, aggregate; the
    new global arrays and the round's log."""
    messages = strategy.configure_train(server_round, to_record(current), round_config(), grid)
    result = strategy.aggregate_train(server_round, stream_replies(grid, messages, timeout=30.0))
    return from_record(result.arrays), result.log
