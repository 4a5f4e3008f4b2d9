"""Driving one round on a Grid: push the messages, then hand replies over as they arrive."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from flwr.app import Message
from flwr.serverapp import Grid

log = logging.getLogger(__name__)


def stream_replies(
    grid: Grid,
    messages: Iterable[Message],
    timeout: float,
    poll_seconds: float = 0.2,
    resend: Callable[[Message], Message | None] | None = None,
) -> Iterator[Message]:
    """Push ``messages`` and yield each reply as soon as the Grid has it.

    ``resend`` may answer a reply with a message to push instead (the strategy's
    :meth:`~server.strategy.FedUmitStrategy.resend_stage1`); that message's reply is yielded
    in place of the one it answers, within the same ``timeout``.

    Stops when every message has a reply or ``timeout`` seconds have passed; sites that dropped
    out or are too slow are logged and left behind, so they never hang the run.
    """
    pending = set(grid.push_messages(list(messages)))
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        replies = list(grid.pull_messages(list(pending)))
        for reply in replies:
            pending.discard(reply.metadata.reply_to_message_id)
            again = resend(reply) if resend is not None else None
            if again is not None:
                pending.update(grid.push_messages([again]))
                continue
            yield reply
        if not replies:
            time.sleep(poll_seconds)
    if pending:
        log.warning(
            "%d sites did not answer within %.0f s; going on without them", len(pending), timeout
        )
