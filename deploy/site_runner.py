"""The site's ClientApp process: runs a run's app bundle only when the site approved it.

Flower 1.42's ``flwr-clientapp`` (what a SuperNode runs under ``--isolation process``) pulls the
message, context and app bundle (FAB) from the SuperNode's Runtime API, unpacks the bundle and
imports its ClientApp. This process does the same with Flower's own functions, with one step
first: the SHA-256 of the bundle's bytes, as received, must be on the site's approved list
(:mod:`deploy.approvals`). Otherwise no byte of the bundle is unpacked or imported: the bundle
is kept for review, the refusal written to the site's audit log, and the reply is Flower's
``INVALID_FAB`` error. An approved bundle is unpacked into a fresh temporary folder and its
ClientApp loaded from there (so a copy unpacked earlier cannot stand in for it), and no
dependency is installed. A task whose input does not arrive within its deadline (the SuperNode
hands out a task while it still receives the message, and never completes the message of a run
that stopped meanwhile) is dropped: logged, reported to the SuperNode as failed, never waited on.
So is a task whose token the SuperNode no longer accepts (:mod:`deploy.task_connection`), and a
task whose run stopped while it ran: logged, and the process ends normally.

Run as ``python -m deploy.site_runner`` by the site executor (:mod:`deploy.site_executor`);
it must not import FedUMIT's ``client`` package before the bundle's own is loaded.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable
from logging import ERROR, INFO
from pathlib import Path

from flwr.app import Context, Error, Message
from flwr.cli.install import install_from_fab
from flwr.clientapp.client_app import ClientApp, LoadClientAppError
from flwr.common.constant import ErrorCode, SubStatus
from flwr.supercore import log
from flwr.supercore.object_ref import load_app
from flwr.supercore.run import RunNotRunningException
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from deploy.approvals import SiteApprovals
from deploy.bundles import Bundle
from deploy.site_process import TASK_INPUT_SECONDS, follow_parent, site_arguments
from deploy.task_connection import InputDeadline, TaskClient, TaskConnection, TaskTokenRejected

EXIT_REFUSED = 3
EXIT_FAILED = 1
CLIENTAPP_FAILED = "the ClientApp failed at the site (the details are in the site's log)"


def refusal_reason(bundle: Bundle) -> str:
    """What the coordinator is told when the site refuses ``bundle``."""
    return f"app bundle sha256 {bundle.sha256} is not approved at this site"


BundleRunner = Callable[[Bundle, Message, Context], Message]
"""Runs an approved bundle's ClientApp on a message: :func:`run_bundle` loads it afresh, a
warm process (:mod:`deploy.warm_runner`) keeps it loaded."""


def run_approved_clientapp(
    task: TaskConnection,
    work_dir: Path,
    audit_log: Path,
    runner: BundleRunner | None = None,
    input_deadline: InputDeadline | None = None,
) -> int:
    """Pull ``task`` from the SuperNode (its input by ``input_deadline``, default
    :data:`TASK_INPUT_SECONDS` from now, else the task is dropped), run it (with ``runner``,
    default :func:`run_bundle`) if its bundle is approved; the exit code. A task the SuperNode
    no longer accepts, or whose run stopped, is dropped."""
    try:
        return _run_task(task.client, work_dir, audit_log, runner, input_deadline)
    except (TaskTokenRejected, RunNotRunningException) as error:
        log(ERROR, "Dropped a ClientApp task: the SuperNode no longer accepts it (%r)", error)
        return EXIT_FAILED


def _run_task(
    client: TaskClient,
    work_dir: Path,
    audit_log: Path,
    runner: BundleRunner | None,
    input_deadline: InputDeadline | None,
) -> int:
    """:func:`run_approved_clientapp` with the task's client."""
    client.input_deadline = input_deadline or InputDeadline(TASK_INPUT_SECONDS)
    try:
        message, context, run, fab = pull_task_input(client)
    except (Exception, RunNotRunningException) as error:  # the run may have stopped
        _drop_task(client, error)
        return EXIT_FAILED
    bundle = Bundle(fab.content)
    approvals = SiteApprovals(work_dir)
    if not approvals.is_approved(bundle.sha256):
        _record_refusal(audit_log, approvals, bundle, int(run.run_id))
        refusal = Error(ErrorCode.INVALID_FAB, refusal_reason(bundle))
        push_message(client, Message(refusal, reply_to=message), context)
        push_task_output(client, context, SubStatus.FAILED, refusal_reason(bundle))
        return EXIT_REFUSED
    log(INFO, "App bundle %s (%s %s) is approved", bundle.sha256[:12], bundle.name, bundle.version)
    try:
        reply = (runner or run_bundle)(bundle, message, context)
        status, details = SubStatus.COMPLETED, ""
    except Exception as error:  # the details stay in the site's log
        log(ERROR, "ClientApp raised an exception", exc_info=error)
        code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        if isinstance(error, LoadClientAppError):
            code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
        reply = Message(Error(code, CLIENTAPP_FAILED), reply_to=message)
        status, details = SubStatus.FAILED, CLIENTAPP_FAILED
    push_message(client, reply, context)
    push_task_output(client, context, status, details)
    return 0 if status == SubStatus.COMPLETED else EXIT_FAILED


def _drop_task(client: TaskClient, error: BaseException) -> None:
    """Log that the task's input could not be pulled and tell the SuperNode it failed."""
    reason = f"its input could not be pulled: {error!r}"
    log(ERROR, "Dropped a ClientApp task: %s", reason)
    # nothing to tell about a stopped run or a task the SuperNode no longer accepts
    with contextlib.suppress(RunNotRunningException, TaskTokenRejected):
        push_task_output(client, None, SubStatus.FAILED, reason)


def run_bundle(bundle: Bundle, message: Message, context: Context) -> Message:
    """Unpack the (approved) bundle into a fresh folder, load its ClientApp and call it."""
    with tempfile.TemporaryDirectory(prefix="fedumit-app-") as folder:
        return load_bundle(bundle, Path(folder))(message=message, context=context)


def load_bundle(bundle: Bundle, folder: Path) -> ClientApp:
    """Unpack the (approved) bundle into ``folder`` and load its ClientApp from there only."""
    reference = bundle.project["tool"]["flwr"]["app"]["components"]["clientapp"]
    app_dir = install_from_fab(bundle.content, install_dir=folder, skip_prompt=True)
    app = load_app(reference, LoadClientAppError, app_dir)
    module = sys.modules[reference.partition(":")[0]]
    if not Path(module.__file__ or "").resolve().is_relative_to(app_dir.resolve()):
        raise LoadClientAppError(f"{reference} would load from {module.__file__}, not the bundle")
    if not isinstance(app, ClientApp):
        raise LoadClientAppError(f"{reference} is not a ClientApp")
    return app


def _record_refusal(audit_log: Path, approvals: SiteApprovals, bundle: Bundle, run: int) -> None:
    """Keep the refused bundle and write the refusal to the audit log (the site's log too)."""
    kept = approvals.keep_refused(bundle)
    log(
        ERROR,
        "Refused app bundle %s of Flower run %s: not approved (kept in %s)",
        bundle.sha256,
        run,
        kept,
    )
    from client.audit import AuditLog  # the bundle is not loaded in this process: safe now
    from client.journal import JournalError

    try:
        AuditLog(audit_log).app_refused(flower_run=run, bundle=bundle, kept=kept)
    except JournalError as error:
        log(ERROR, "The refusal could not be written to the audit log: %s", error)


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.site_runner``: one ClientApp task of the site's SuperNode."""
    parser = site_arguments(__doc__.splitlines()[0])
    parser.add_argument("--token", required=True, help="the task's token from the SuperNode")
    args = parser.parse_args(argv)
    follow_parent(args.parent_pid)
    deadline = InputDeadline(args.input_timeout)
    with TaskConnection(args.runtime_api_address, args.token) as task:
        return run_approved_clientapp(task, args.work_dir, args.audit_log, None, deadline)


if __name__ == "__main__":
    sys.exit(main())
