"""What the site's executors and ClientApp runners share: their command line and its arguments.

Every one of them is started for one site (its SuperNode's Runtime API on loopback, its work
folder, its audit log, how long a task's input may take to arrive) and ends with the process that
started it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TASK_INPUT_SECONDS = 600.0
"""How long a ClientApp process waits for its task's input before it drops the task. The
SuperNode hands out a task before it has received the task's message from the SuperLink, and
never delivers the message of a run that stopped meanwhile; Flower's own pull waits up to 2 h."""


def site_command(
    module: str,
    runtime_api_address: str,
    work_dir: Path,
    audit_log: Path,
    *extra: str,
    input_timeout: float = TASK_INPUT_SECONDS,
) -> list[str]:
    """argv of ``python -m module`` for a site, followed by ``extra`` arguments."""
    return [
        sys.executable, "-m", module,
        "--runtime-api-address", runtime_api_address,
        "--work-dir", str(work_dir), "--audit-log", str(audit_log),
        "--input-timeout", str(input_timeout), *extra,
    ]  # fmt: skip


def executor_command(
    warm: bool,
    runtime_api_address: str,
    work_dir: Path,
    audit_log: Path,
    parent: int,
    input_timeout: float = TASK_INPUT_SECONDS,
) -> list[str]:
    """argv of the site's executor (:mod:`deploy.warm_executor` when ``warm``, else
    :mod:`deploy.site_executor`) for a SuperNode whose process id is ``parent``."""
    module = "deploy.warm_executor" if warm else "deploy.site_executor"
    return site_command(
        module, runtime_api_address, work_dir, audit_log, "--parent-pid", str(parent),
        input_timeout=input_timeout,
    )  # fmt: skip


def positive_seconds(text: str) -> float:
    """A number of seconds above zero (an argparse type)."""
    seconds = float(text)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds above 0")
    return seconds


def site_arguments(description: str) -> argparse.ArgumentParser:
    """A parser of the arguments :func:`site_command` writes (add a process's own to it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runtime-api-address", required=True, help="SuperNode's Runtime API")
    parser.add_argument("--work-dir", type=Path, required=True, help="the site's work folder")
    parser.add_argument("--audit-log", type=Path, required=True, help="the site's audit log")
    parser.add_argument("--parent-pid", type=int, help="exit when this process exits")
    parser.add_argument(
        "--input-timeout",
        type=positive_seconds,
        default=TASK_INPUT_SECONDS,
        help="seconds a task's input may take to arrive before the task is dropped",
    )
    return parser


def follow_parent(parent_pid: int | None) -> None:
    """Exit when the process ``parent_pid`` exits (nothing when it is ``None``)."""
    from flwr.supercore.app_utils import start_parent_process_monitor  # the CLI imports us

    if parent_pid is not None:
        start_parent_process_monitor(parent_pid)
