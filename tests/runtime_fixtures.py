"""Flower's own SuperNode Runtime API on loopback, and a real warm ClientApp process for it.

The Runtime API is Flower's HTTP app over its in-memory NodeState, in the test's process;
messages reach it through Flower's own SuperNode code (``_pull_and_store_message``); tasks are
acquired as the site's executor acquires them, and their tokens written to a real
``deploy.warm_runner`` process as the warm executor writes them.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from flwr.app import ArrayRecord, RecordDict
from flwr.app.message import make_message, remove_content_from_message
from flwr.app.metadata import Metadata
from flwr.cli.build import build_fab_from_disk
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.main import create_app
from flwr.supernode.nodestate import NodeState, NodeStateFactory
from flwr.supernode.start_client_internal import _pull_and_store_message

from client.audit import AuditLog
from deploy.bundles import sha256_hex
from deploy.site_process import site_command
from tests.deploy_fixtures import free_port, wait_for

NODE_ID = 7

PROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{module}-app"
version = "1.0.0"

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedumit-tests"

[tool.flwr.app.components]
serverapp = "{module}:server"
clientapp = "{module}:client"
"""


def build_fab(folder: Path, module: str, source: str) -> Fab:
    """A small app bundle whose ClientApp is ``client`` in ``module`` (``source``)."""
    project = folder / f"{module}-app"
    project.mkdir()
    (project / "pyproject.toml").write_text(PROJECT.format(module=module))
    (project / f"{module}.py").write_text(source)
    content = build_fab_from_disk(project)
    return Fab(sha256_hex(content), content, {})


@pytest.fixture(name="supernode")
def supernode_runtime_api() -> Iterator[tuple[str, NodeState]]:
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


ObjectPuller = Callable[[int, str], bytes]


def receive(
    state: NodeState,
    fab: Fab,
    run_id: int,
    content: RecordDict | None = None,
    pull_object: ObjectPuller | None = None,
) -> None:
    """A train message of ``run_id`` (``content``, default an array) reaches the SuperNode
    through Flower's own code; ``pull_object`` stands in for the SuperLink's answer to the
    SuperNode's pull of each of the message's objects (default: the object, whole)."""
    content = content or RecordDict({"arrays": ArrayRecord([np.arange(1000.0)])})
    metadata = Metadata(run_id, "", 0, NODE_ID, "", "1", time.time(), 600.0, "train")
    message = make_message(metadata, content)
    message.metadata.__dict__["_message_id"] = message.object_id  # as the SuperLink sends it
    objects = get_all_nested_objects(message)
    tree = get_object_tree(message)
    run = Run.create_empty(run_id)
    run.fab_id, run.fab_version, run.fab_hash = "fedumit-tests/app", "1.0.0", fab.hash_str

    def whole(_run_id: int, object_id: str) -> bytes:
        return objects[object_id].deflate()

    _pull_and_store_message(
        state=state,
        object_store=state.object_store,
        node_config={},
        receive=lambda: (remove_content_from_message(message), tree),
        get_run=lambda _run_id: run,
        get_fab=lambda _hash, _run_id: fab,
        pull_object=pull_object or whole,
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
        self.work_dir = tmp_path / "work"
        self.log = tmp_path / "site.log"
        argv = site_command(
            "deploy.warm_runner", address, self.work_dir, self.audit.path,
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
