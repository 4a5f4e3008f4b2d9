"""A warm process keeps the tokens of the tasks it has not started yet valid, and drops a task
whose token the SuperNode no longer accepts without ending itself.

Flower's SuperNode lets a claimed task's token lapse unless heartbeats for it arrive: 30 s after
the executor acquired it the task goes back to pending and the token is void; a task the
SuperNode finished meanwhile (its message could not be received) has a void token too. Flower's
client answers a void token by sending SIGINT to its own process, which would end the warm
process and its loaded model.

Flower's own SuperNode Runtime API and SuperNode code, and a real ``deploy.warm_runner``
process. Once the warm process runs its first task, the claim lifetime in the test's SuperNode
is cut from Flower's 30 s to :data:`CLAIM_SECONDS` (a heartbeat still extends a token by
Flower's 60 s), so that a waiting token outlives it within seconds.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL, HEARTBEAT_PATIENCE, Status, SubStatus
from flwr.supercore.corestate import in_memory_corestate
from flwr.supercore.fab import Fab
from flwr.supernode.nodestate import NodeState

from deploy.approvals import SiteApprovals
from deploy.bundles import Bundle
from tests.deploy_fixtures import wait_for
from tests.runtime_fixtures import (
    WarmRunner,
    acquire_token,
    build_fab,
    receive,
    status,
    supernode_runtime_api,  # noqa: F401  (the supernode fixture)
)

CLAIM_SECONDS = 3
FIRST_TASK_SECONDS = 3.0 * CLAIM_SECONDS  # the second task's token waits about that long
BOUND = 60.0

SLOW_APP = """\
import time

from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

client = ClientApp()
server = None


@client.train()
def train(message, context):
    seconds = message.content["config"]["seconds"]
    time.sleep(seconds)
    return Message(RecordDict({"metrics": MetricRecord({"slept": seconds})}), reply_to=message)
"""


def shorten_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the SuperNode voids a claimed task's token after :data:`CLAIM_SECONDS`
    without a heartbeat (a heartbeat still extends it by Flower's 60 s)."""
    monkeypatch.setattr(in_memory_corestate, "HEARTBEAT_DEFAULT_INTERVAL", CLAIM_SECONDS)
    patience = HEARTBEAT_PATIENCE * HEARTBEAT_DEFAULT_INTERVAL / CLAIM_SECONDS
    monkeypatch.setattr(in_memory_corestate, "HEARTBEAT_PATIENCE", patience)


@pytest.fixture
def slow_app(tmp_path: Path) -> Fab:
    """An app bundle whose ClientApp sleeps as long as its message says."""
    return build_fab(tmp_path, "slow", SLOW_APP)


def train_for(seconds: float) -> RecordDict:
    """The content of a train message for :data:`SLOW_APP`."""
    return RecordDict({"config": ConfigRecord({"seconds": seconds})})


def site_runner(tmp_path: Path, address: str, approved: Fab) -> WarmRunner:
    """The site's warm process, ``approved`` on its list."""
    runner = WarmRunner(tmp_path, address, input_timeout=BOUND)
    SiteApprovals(runner.work_dir).approve(Bundle(approved.content))
    return runner


def finished(state: NodeState, task_id: int) -> bool:
    """Whether the SuperNode has finished the task."""
    return status(state, task_id).status == Status.FINISHED


def assert_completed(state: NodeState, task_id: int, run_id: int) -> None:
    """The task completed: the ClientApp replied."""
    assert status(state, task_id).sub_status == SubStatus.COMPLETED
    (reply,) = state.get_messages_legacy(run_ids=[run_id], is_reply=True)
    assert not reply.has_error(), reply.error


def test_a_token_waiting_behind_a_long_task_stays_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, supernode: tuple[str, NodeState], slow_app: Fab
) -> None:
    address, state = supernode
    receive(state, slow_app, 1, train_for(FIRST_TASK_SECONDS))
    receive(state, slow_app, 2, train_for(0.0))
    runner = site_runner(tmp_path, address, slow_app)
    try:
        first, token = acquire_token(address)
        runner.send(token)
        wait_for(lambda: status(state, first).status == Status.RUNNING, BOUND, "task 1", 0.1)
        shorten_claims(monkeypatch)  # the process reads tokens by now, whatever its start-up
        second, token = acquire_token(address)
        runner.send(token)  # waits in the process's queue while task 1 trains

        wait_for(lambda: finished(state, second) or runner.process.poll(), BOUND, "task 2")
        assert runner.process.poll() is None, "the warm process should wait for the next task"
        assert_completed(state, first, 1)
        assert_completed(state, second, 2)
        assert runner.stop() == 0
    finally:
        runner.kill()


def test_a_task_the_supernode_finished_meanwhile_is_dropped_and_the_process_goes_on(
    tmp_path: Path, supernode: tuple[str, NodeState], slow_app: Fab
) -> None:
    address, state = supernode
    claimed: list[tuple[int, str]] = []
    claiming = threading.Lock()

    def link_lost(_run_id: int, _object_id: str) -> bytes:
        """The executor claims the task while the SuperNode still receives its message; then
        the link to the SuperLink fails, and the SuperNode finishes the task as failed."""
        with claiming:
            if not claimed:
                claimed.append(acquire_token(address))
        raise ConnectionError("the SuperLink cannot be reached")

    receive(state, slow_app, 1, train_for(0.0), pull_object=link_lost)
    ((void, token),) = claimed
    assert status(state, void).sub_status == SubStatus.FAILED
    runner = site_runner(tmp_path, address, slow_app)
    try:
        runner.send(token)
        receive(state, slow_app, 2, train_for(0.0))
        following, token = acquire_token(address)
        runner.send(token)

        wait_for(lambda: finished(state, following) or runner.process.poll(), BOUND, "task 2")
        assert runner.process.poll() is None, "the warm process should wait for the next task"
        assert_completed(state, following, 2)
        assert "Dropped a ClientApp task" in runner.log.read_text()
        assert runner.stop() == 0
    finally:
        runner.kill()
