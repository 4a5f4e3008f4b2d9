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

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from flwr.app import ArrayRecord, RecordDict
from flwr.app.message import make_message, remove_content_from_message
from flwr.app.metadata import Metadata
from flwr.cli.build import build_fab_from_disk
from flwr.common.constant import ErrorCode, Status, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run, RunNotRunningException
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.main import create_app
from flwr.supernode.nodestate import NodeState, NodeStateFactory
from flwr.supernode.start_client_internal import _pull_and_store_message

from client.audit import AuditLog
from deploy.bundles import sha256_hex
from deploy.site_process import site_command
from tests.deploy_fixtures import free_port, wait_for

NODE_ID = 7
STOPPED_RUN, NEXT_RUN = 1, 2
INPUT_TIMEOUT = 2.0
BOUND = 30.0  # a deadline, one of Flower's pull retry intervals (12 s at most), start-up

PROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "stalled-app"
version = "1.0.0"

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedumit-tests"

[tool.flwr.app.components]
serverapp = "stalled:server"
clientapp = "stalled:client"
"""


@pytest.fixture
def fab(tmp_path: Path) -> Fab:
    """A small app bundle, approved nowhere."""
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text(PROJECT)
    (project / "stalled.py").write_text("client = server = None\n")
    content = build_fab_from_disk(project)
    return Fab(sha256_hex(content), content, {})


@pytest.fixture
def supernode() -> Iterator[tuple[str, NodeState]]:
    """Flower's SuperNode Runtime API on loopback over its own state: (address, state)."""
    factory = NodeStateFactory(objectstore_factory=ObjectStoreFactory())
    factory.state().set_node_id(NODE_ID)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(state_factory=factory), host="127.0.0.1", port=port)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the Runtime API", interval=0.05)
    try:
        yield f"127.0.0.1:{port}", factory.state()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def receive(state: NodeState, fab: Fab, run_id: int, run_stopped: bool) -> None:
    """A train message of ``run_id`` reaches the SuperNode through Flower's own code: whole, or
    with its objects refused because the run stopped meanwhile."""
    content = RecordDict({"arrays": ArrayRecord([np.arange(1000.0)])})
    metadata = Metadata(run_id, "", 0, NODE_ID, "", "1", time.time(), 600.0, "train")
    message = make_message(metadata, content)
    message.metadata.__dict__["_message_id"] = message.object_id  # as the SuperLink sends it
    objects = get_all_nested_objects(message)
    tree = get_object_tree(message)
    run = Run.create_empty(run_id)
    run.fab_id, run.fab_version, run.fab_hash = "fedumit-tests/stalled-app", "1.0.0", fab.hash_str

    def pull_object(_run_id: int, object_id: str) -> bytes:
        if run_stopped:
            raise RunNotRunningException
        return objects[object_id].deflate()

    _pull_and_store_message(
        state=state,
        object_store=state.object_store,
        node_config={},
        receive=lambda: (remove_content_from_message(message), tree),
        get_run=lambda _run_id: run,
        get_fab=lambda _hash, _run_id: fab,
        pull_object=pull_object,
        confirm_message_received=lambda _run_id, _message_id: None,
        trusted_entities=None,
    )


def acquire_token(address: str) -> tuple[int, str]:
    """(task id, token) of the oldest pending ClientApp task, acquired as the executor does."""
    client = RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
    )
    try:
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
        acquired = client.AcquireTask(request)
        assert acquired.HasField("task") and acquired.token
        return acquired.task.task_id, acquired.token
    finally:
        client.close()


class WarmRunner:
    """A real ``deploy.warm_runner`` process for the site, its log in a file."""

    def __init__(self, tmp_path: Path, address: str, input_timeout: float) -> None:
        self.audit = AuditLog(tmp_path / "audit.jsonl")
        self.audit.initialize(site="hospital-a")
        self.log = tmp_path / "site.log"
        argv = site_command(
            "deploy.warm_runner", address, tmp_path / "work", self.audit.path,
            input_timeout=input_timeout,
        )  # fmt: skip
        with self.log.open("w") as log_file:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=log_file, text=True)

    def send(self, token: str) -> None:
        """Hand the process a task, as the warm executor does."""
        assert self.process.stdin is not None
        self.process.stdin.write(token + "\n")
        self.process.stdin.flush()

    def stop(self) -> int:
        """Close its input: it exits (its exit code)."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        """End it if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def status(state: NodeState, task_id: int) -> Any:
    """The task's status in the SuperNode."""
    return state.get_tasks(task_ids=[task_id])[0].status


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
    receive(state, fab, STOPPED_RUN, run_stopped=True)
    stalled, token = acquire_token(address)
    runner = WarmRunner(tmp_path, address, INPUT_TIMEOUT)
    try:
        runner.send(token)
        started = time.monotonic()
        wait_for(lambda: status(state, stalled).status == Status.FINISHED, BOUND, "the drop", 0.1)
        assert time.monotonic() - started >= INPUT_TIMEOUT, "dropped before its deadline"

        receive(state, fab, NEXT_RUN, run_stopped=False)
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
    receive(state, fab, STOPPED_RUN, run_stopped=True)
    stalled, token = acquire_token(address)
    runner = WarmRunner(tmp_path, address, input_timeout=3600.0)
    try:
        runner.send(token)
        wait_for(lambda: status(state, stalled).status == Status.RUNNING, BOUND, "the pull", 0.1)

        receive(state, fab, NEXT_RUN, run_stopped=False)  # the SuperNode moved on
        following, token = acquire_token(address)
        runner.send(token)
        wait_for(lambda: status(state, following).status == Status.FINISHED, BOUND, "next task")
        assert status(state, stalled).status == Status.FINISHED
        assert_dropped_then_next_runs(state, runner, stalled, following)
    finally:
        runner.kill()
