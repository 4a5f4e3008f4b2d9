"""A ClientApp task whose message never arrives is dropped in bounded time; the warm process
goes on to the next task.

Flower's own SuperNode Runtime API (its HTTP app on loopback, over its in-memory NodeState)
receives two messages through Flower's own SuperNode code (``_pull_and_store_message``). The
first is of a run that stopped while the SuperNode received it (the SuperLink answers
``RunNotRunningException``), which leaves a task whose message's objects never arrive: a
ClientApp pulling them would retry for up to 2 h. The second, of the run that follows, arrives
whole. A real ``deploy.warm_runner`` process gets both tasks' tokens, as the warm executor
writes them. It drops the first (the task finished as failed, the reason in the site's log),
at its input deadline or, with a long deadline, a few seconds after the second task's token
arrives; then it runs the second (its bundle is not approved here, so the reply is Flower's
``INVALID_FAB`` error) and still waits for more.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flwr.common.constant import ErrorCode, Status, SubStatus
from flwr.supercore.fab import Fab
from flwr.supercore.run import RunNotRunningException
from flwr.supernode.nodestate import NodeState

from tests.deploy_fixtures import wait_for
from tests.runtime_fixtures import (
    WarmRunner,
    acquire_token,
    build_fab,
    receive,
    status,
    supernode_runtime_api,  # noqa: F401  (the supernode fixture)
)

STOPPED_RUN, NEXT_RUN = 1, 2
INPUT_TIMEOUT = 2.0
BOUND = 30.0  # a deadline, one of Flower's pull retry intervals (12 s at most), start-up


@pytest.fixture
def fab(tmp_path: Path) -> Fab:
    """A small app bundle, approved nowhere."""
    return build_fab(tmp_path, "stalled", "client = server = None\n")


def run_stopped(_run_id: int, _object_id: str) -> bytes:
    """The SuperLink's answer for an object of a run that stopped."""
    raise RunNotRunningException


def assert_dropped_then_next_runs(
    state: NodeState, runner: WarmRunner, stalled: int, following: int
) -> None:
    """The stalled task failed for want of input (logged), and the next task ran: its bundle
    refused, as at any site that has not approved it."""
    dropped = status(state, stalled)
    assert dropped.sub_status == SubStatus.FAILED
    assert "did not arrive in time" in dropped.details
    assert "Dropped a ClientApp task" in runner.log.read_text()
    (reply,) = state.get_messages_legacy(run_ids=[NEXT_RUN], is_reply=True)
    assert reply.has_error() and reply.error.code == ErrorCode.INVALID_FAB
    assert [refusal["flower_run"] for refusal in runner.audit.refusals()] == [NEXT_RUN]
    assert runner.process.poll() is None, "the warm process should wait for the next task"
    assert runner.stop() == 0


def test_a_task_whose_message_never_arrives_is_dropped_at_its_deadline(
    tmp_path: Path, supernode: tuple[str, NodeState], fab: Fab
) -> None:
    address, state = supernode
    receive(state, fab, STOPPED_RUN, pull_object=run_stopped)
    stalled, token = acquire_token(address)
    runner = WarmRunner(tmp_path, address, INPUT_TIMEOUT)
    try:
        runner.send(token)
        started = time.monotonic()
        wait_for(lambda: status(state, stalled).status == Status.FINISHED, BOUND, "the drop", 0.1)
        assert time.monotonic() - started >= INPUT_TIMEOUT, "dropped before its deadline"

        receive(state, fab, NEXT_RUN)
        following, token = acquire_token(address)
        runner.send(token)
        wait_for(lambda: status(state, following).status == Status.FINISHED, BOUND, "next task")
        assert_dropped_then_next_runs(state, runner, stalled, following)
    finally:
        runner.kill()


def test_a_later_task_ends_the_wait_for_a_message_that_never_arrives(
    tmp_path: Path, supernode: tuple[str, NodeState], fab: Fab
) -> None:
    address, state = supernode
    receive(state, fab, STOPPED_RUN, pull_object=run_stopped)
    stalled, token = acquire_token(address)
    runner = WarmRunner(tmp_path, address, input_timeout=3600.0)
    try:
        runner.send(token)
        wait_for(lambda: status(state, stalled).status == Status.RUNNING, BOUND, "the pull", 0.1)

        receive(state, fab, NEXT_RUN)  # the SuperNode moved on
        following, token = acquire_token(address)
        runner.send(token)
        wait_for(lambda: status(state, following).status == Status.FINISHED, BOUND, "next task")
        assert status(state, stalled).status == Status.FINISHED
        assert_dropped_then_next_runs(state, runner, stalled, following)
    finally:
        runner.kill()
