"""A ClientApp task's connection to its SuperNode's Runtime API: its client and its heartbeat.

Flower 1.42's SuperNode keeps a task's token only while heartbeats for it arrive: a token lasts
30 s after the executor claims the task and each heartbeat extends it by 60 s; a claimed task
whose token lapsed goes back to pending (the executor claims it again, with a new token), a
running one fails. A task the SuperNode finished meanwhile (its message could not be received)
has a void token too. Flower's client and heartbeat answer a void token by sending SIGINT to
their own process: that ends a ClientApp process of one task, but would end a warm process
(:mod:`deploy.warm_runner`) and the model it keeps loaded.

A :class:`TaskConnection` sends its task's heartbeats from the moment it is opened, that is
from the moment the token arrives, before the task starts; a call with a void token raises
:class:`TaskTokenRejected` instead of SIGINT, so the caller drops the task and goes on; and the
task's input must arrive by a deadline (:class:`TaskClient`).
"""

from __future__ import annotations

import math
import time
from logging import WARNING
from types import TracebackType

import httpx
from flwr.proto.message_pb2 import PullObjectRequest, PullObjectResponse  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest  # pylint: disable=E0611
from flwr.supercore import log
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.inflatable.inflatable_utils import ObjectPullError
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
)
from flwr.supercore.retry import RetryInvoker, make_simple_http_retry_invoker
from flwr.supercore.run import RunNotRunningException
from flwr.supercore.runtime import RuntimeHttpClient


class TaskTokenRejected(Exception):
    """The SuperNode no longer accepts the task's token (it lapsed, or the task finished)."""


class InputDeadline:
    """When a task's input must have arrived, on the ``time.monotonic()`` clock."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def bring_forward(self, seconds: float) -> None:
        """Make the deadline ``seconds`` from now, if that is sooner."""
        self.at = min(self.at, time.monotonic() + seconds)

    def passed(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() > self.at


class TaskClient(RuntimeHttpClient):
    """The Runtime API client of one task, whose objects must arrive by ``input_deadline``.

    Flower's pull (``pull_task_input``) retries an object the SuperNode has not received yet for
    up to 2 h. Once the deadline has passed, an object still not there raises Flower's
    ``ObjectPullError`` instead, which ends all of the pull's retries at once: the pull ends at
    most one retry interval (Flower's backoff, at most 12 s) after the deadline."""

    input_deadline = InputDeadline(math.inf)

    def PullObject(self, request: PullObjectRequest) -> PullObjectResponse:
        """Flower's ``PullObject``; an object not there after the deadline is an error."""
        response = super().PullObject(request)
        missing = response.object_found and not response.object_available
        if missing and self.input_deadline.passed():
            raise ObjectPullError(request.object_id, "the task's input did not arrive in time")
        return response


def task_retry_invoker() -> RetryInvoker:
    """Flower's retries for Runtime API calls, except that a void token raises
    :class:`TaskTokenRejected` (Flower's own sends SIGINT to the process)."""
    invoker = make_simple_http_retry_invoker()
    flower_giveup = invoker.should_giveup
    assert flower_giveup is not None

    def should_giveup(error: Exception) -> bool:
        void_token = (
            isinstance(error, httpx.HTTPStatusError)
            and error.response.status_code == httpx.codes.UNAUTHORIZED
        )
        if void_token:
            raise TaskTokenRejected(str(error)) from error
        return flower_giveup(error)

    invoker.should_giveup = should_giveup
    return invoker


class TaskConnection:
    """The Runtime API client of one task (its ``client``), and its heartbeats from when it is
    opened until it is closed; stops them once the SuperNode refuses one."""

    def __init__(self, runtime_api_address: str, token: str) -> None:
        self.client = TaskClient.from_server_address(
            server_address=runtime_api_address,
            insecure=True,
            root_certificates=None,
            interceptors=[
                RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                RuntimeTokenHttpInterceptor(token),
            ],
            retry_invoker=task_retry_invoker(),
        )
        self.refused = False
        self._heartbeat = HeartbeatSender(self._beat)
        self._heartbeat.start()

    def _beat(self) -> bool:
        """Send one heartbeat unless one was refused (Flower's sender calls this every 20 s or
        so; the client retries while the SuperNode cannot be reached)."""
        if self.refused:
            return True
        try:
            accepted = self.client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success
            reason = "" if accepted else "the task is over"
        except (TaskTokenRejected, RunNotRunningException, httpx.HTTPError) as error:
            reason = repr(error)
        if reason:
            log(WARNING, "The SuperNode refused a heartbeat of a ClientApp task: %s", reason)
            self.refused = True
        return True

    def close(self) -> None:
        """Stop the heartbeats and close the client."""
        self._heartbeat.stop()
        self.client.close()

    def __enter__(self) -> TaskConnection:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
