"""The site's executor: the SuperExec of a SuperNode started with ``--isolation process``.

Flower 1.42's ``flower-superexec`` asks the SuperNode's Runtime API for tasks and starts
``flwr-clientapp`` (or an agent, model or connector process) for each. A hospital's SuperNode
has one kind of task to run, ClientApps, and runs each through :mod:`deploy.site_runner`, which
checks the task's app bundle against the site's approved list before any of its code is
imported. This loop asks only for ClientApp tasks.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient

from deploy.site_process import TASK_INPUT_SECONDS, follow_parent, site_arguments, site_command

POLL_SECONDS = 1.0


Launcher = Callable[[str, str], None]
"""Starts one ClientApp task: its token and its bundle's SHA-256 (Flower's ``fab_hash``)."""


def run_site_executor(
    runtime_api_address: str,
    work_dir: Path,
    audit_log: Path,
    launch: Launcher | None = None,
    poll_seconds: float = POLL_SECONDS,
    input_timeout: float = TASK_INPUT_SECONDS,
) -> None:
    """Hand each ClientApp task to ``launch`` (default: one :mod:`deploy.site_runner` process
    per task, which waits ``input_timeout`` seconds at most for the task's input), forever."""
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
    if launch is None:

        def launch(token: str, _bundle: str) -> None:
            subprocess.Popen(
                runner_command(runtime_api_address, token, work_dir, audit_log, input_timeout)
            )

    while True:
        acquired = client.AcquireTask(request)
        if acquired.HasField("task") and acquired.token:
            launch(acquired.token, acquired.task.fab_hash)
        time.sleep(poll_seconds)


def runner_command(
    runtime_api_address: str,
    token: str,
    work_dir: Path,
    audit_log: Path,
    input_timeout: float = TASK_INPUT_SECONDS,
) -> list[str]:
    """argv of the ClientApp process of one task."""
    return site_command(
        "deploy.site_runner", runtime_api_address, work_dir, audit_log, "--token", token,
        input_timeout=input_timeout,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.site_executor``."""
    args = site_arguments(__doc__.splitlines()[0]).parse_args(argv)
    follow_parent(args.parent_pid)
    run_site_executor(
        args.runtime_api_address,
        args.work_dir,
        args.audit_log,
        input_timeout=args.input_timeout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
