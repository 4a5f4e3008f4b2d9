"""A warm ClientApp process: one approved app bundle, loaded once, runs task after task.

Flower 1.42 starts a fresh process for every message, which then imports torch, transformers
and peft, reads the site's archive and loads the base model: 10 to 60 s a message on a small
CPU, minutes at the full Qwen2-VL-2B shape. This process does what :mod:`deploy.site_runner`
does for one task (the bundle's SHA-256 must be on the site's approved list before any of its
code is imported, and the refusal is recorded), for every task token the warm executor
(:mod:`deploy.warm_executor`) writes to its standard input, one a line. The first approved
bundle is unpacked into a folder that lives as long as the process and its ClientApp loaded
from there; a task of another bundle is answered with a ``LOAD_CLIENT_APP_EXCEPTION`` error
(the executor starts a process per bundle, so that happens only if the two disagree). Approval
is checked on every task, so revoking a bundle takes effect at its next message.

A task whose input does not arrive in time is dropped
(:func:`deploy.site_runner.run_approved_clientapp`) and the process goes on to the next one. The
SuperNode creates a message's task before it receives the message, and receives one message at
a time: once a later task's token arrives, the input of the task still waiting for it either is
there or will never come (its run stopped meanwhile), so the wait ends
:data:`NEXT_TASK_GRACE_SECONDS` later. The process exits when the executor that started it does.

A token waits in the process while an earlier task runs (the executor hands each task over as
soon as it claims it). The SuperNode voids a claimed task's token after 30 s without a
heartbeat, so each task's heartbeats start as its token arrives (:mod:`deploy.task_connection`),
not when it starts; a task whose token the SuperNode voids all the same (it finished the task
meanwhile) is dropped, and the process goes on to the next one.

The process starts before its first task (:mod:`deploy.warm_executor` starts one as the SuperNode
starts, with no bundle yet): it imports the site's installed dependencies
(:data:`SITE_DEPENDENCIES`, never a bundle's code) while it waits, so a bundle's first round
does not wait for them; its first task's bundle is then checked and loaded as any other.

What the ClientApp keeps between messages (the site's records, the model, the merged stage-1
base) stays in this process's memory while it waits: at the full shape about 9 GB.
"""

from __future__ import annotations

import importlib
import os
import queue
import shutil
import sys
import threading
import time
from logging import INFO
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp.client_app import ClientApp, LoadClientAppError
from flwr.supercore import log

from deploy.bundles import Bundle
from deploy.site_process import TASK_INPUT_SECONDS, follow_parent, site_arguments
from deploy.site_runner import load_bundle, run_approved_clientapp
from deploy.task_connection import InputDeadline, TaskConnection

NEXT_TASK_GRACE_SECONDS = 5.0
SITE_DEPENDENCIES = ("torch", "transformers", "peft", "opacus")
"""The site's installed packages a FedUMIT ClientApp imports (about 7 s on one idle CPU core,
several times that while the site's other processes start too)."""


def import_site_dependencies() -> None:
    """Import :data:`SITE_DEPENDENCIES` from the site's installation and log how long it took."""
    start = time.monotonic()
    for name in SITE_DEPENDENCIES:
        importlib.import_module(name)
    seconds = time.monotonic() - start
    log(
        INFO,
        "Imported the site's dependencies (%s) in %.1f s",
        ", ".join(SITE_DEPENDENCIES),
        seconds,
    )


class WarmBundle:
    """The ClientApp of the first bundle it is asked to run, kept loaded.

    The bundle is unpacked into ``folder``, a folder of this process in the site's work
    directory rather than a temporary one: a warm process killed with its SuperNode leaves its
    folder behind, and the next warm process removes it (:func:`remove_dead_folders`).
    """

    def __init__(self, folder: Path) -> None:
        self.sha256 = ""
        self.folder = folder
        self._app: ClientApp | None = None

    def __call__(self, bundle: Bundle, message: Message, context: Context) -> Message:
        """Run ``bundle``'s ClientApp on ``message`` (a :data:`deploy.site_runner.BundleRunner`)."""
        if self._app is None:
            remove_dead_folders(self.folder.parent)
            self.folder.mkdir(parents=True, exist_ok=True)
            self._app = load_bundle(bundle, self.folder)
            self.sha256 = bundle.sha256
        elif bundle.sha256 != self.sha256:
            raise LoadClientAppError(
                f"this warm process runs bundle {self.sha256[:12]}, not {bundle.sha256[:12]}"
            )
        return self._app(message=message, context=context)


def remove_dead_folders(parent: Path) -> None:
    """Remove the bundle folders in ``parent`` of warm processes that are no longer running
    (each folder is named by its process id)."""
    for folder in parent.glob("*"):
        if folder.name.isdigit() and not _running(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def serve(
    runtime_api_address: str,
    work_dir: Path,
    audit_log: Path,
    input_timeout: float = TASK_INPUT_SECONDS,
) -> None:
    """Run each task whose token arrives on standard input, one after the other, until it
    closes; a task's heartbeats start when its token arrives; a task waits for its input
    ``input_timeout`` seconds at most, and :data:`NEXT_TASK_GRACE_SECONDS` at most once a later
    task's token is here. The site's dependencies are imported first, tokens read meanwhile."""
    warm = WarmBundle(work_dir / "warm-apps" / str(os.getpid()))
    tasks: queue.SimpleQueue[TaskConnection | None] = queue.SimpleQueue()
    running = InputDeadline(0.0)  # the deadline of the task being run

    def read_tokens() -> None:
        for line in sys.stdin:
            if token := line.strip():
                running.bring_forward(NEXT_TASK_GRACE_SECONDS)  # before the task is taken
                tasks.put(TaskConnection(runtime_api_address, token))  # its heartbeats start
        tasks.put(None)

    threading.Thread(target=read_tokens, name="task-tokens", daemon=True).start()
    import_site_dependencies()  # tokens that arrive meanwhile wait, their heartbeats going
    while (task := tasks.get()) is not None:
        running = InputDeadline(input_timeout)
        if not tasks.empty():  # a later task is already here
            running.bring_forward(NEXT_TASK_GRACE_SECONDS)
        with task:
            run_approved_clientapp(task, work_dir, audit_log, warm, running)


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.warm_runner``: the warm ClientApp process of one bundle."""
    args = site_arguments(__doc__.splitlines()[0]).parse_args(argv)
    follow_parent(args.parent_pid)
    serve(args.runtime_api_address, args.work_dir, args.audit_log, args.input_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
