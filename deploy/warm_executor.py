"""The site's warm executor: ClientApp tasks go to a long-lived process per app bundle.

The same loop as :mod:`deploy.site_executor` (ClientApp tasks only, from the SuperNode's
Runtime API on loopback), polling five times a second, but a task's token goes to the warm
process of its bundle (:mod:`deploy.warm_runner`), kept while the bundle's tasks keep coming. A
spare process, started with the executor, imports the site's dependencies (never a bundle's
code) and waits: the first task's bundle gets it. A task of another bundle stops the old
process (and frees its memory) and starts one for the new bundle. The warm process checks the
bundle against the site's approved list on every task, as :mod:`deploy.site_runner` does; a
process that died is started again at the next task. ``fedumit supernode`` runs this executor
(``--cold``: the fresh-process one); the warm process ends when this executor does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deploy.site_executor import run_site_executor
from deploy.site_process import TASK_INPUT_SECONDS, follow_parent, site_arguments, site_command

POLL_SECONDS = 0.2


class WarmLauncher:
    """Hands each task to the warm process of its bundle (a
    :data:`deploy.site_executor.Launcher`)."""

    def __init__(
        self,
        runtime_api_address: str,
        work_dir: Path,
        audit_log: Path,
        input_timeout: float = TASK_INPUT_SECONDS,
    ) -> None:
        self.argv = site_command(
            "deploy.warm_runner", runtime_api_address, work_dir, audit_log,
            "--parent-pid", str(os.getpid()), input_timeout=input_timeout,
        )  # fmt: skip
        self.bundle = ""
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start a warm process of no bundle yet (the spare): the next task's bundle gets it."""
        self.process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, text=True)
        self.bundle = ""

    def __call__(self, token: str, bundle: str) -> None:
        """Write ``token`` to the warm process of ``bundle`` (the spare if there is one),
        started first when needed."""
        live = self.process is not None and self.process.poll() is None
        if not live or self.bundle not in ("", bundle):
            self.stop()
            self.start()
        self.bundle = bundle
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(token + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        """End the warm process (its standard input closes; it exits after its task)."""
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
        self.process = None


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.warm_executor``."""
    args = site_arguments(__doc__.splitlines()[0]).parse_args(argv)
    follow_parent(args.parent_pid)
    launcher = WarmLauncher(
        args.runtime_api_address, args.work_dir, args.audit_log, args.input_timeout
    )
    launcher.start()
    try:
        run_site_executor(
            args.runtime_api_address,
            args.work_dir,
            args.audit_log,
            launch=launcher,
            poll_seconds=POLL_SECONDS,
        )
    finally:
        launcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
