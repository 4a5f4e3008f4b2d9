"""Calling Flower's own executables: where they are, their environment, value quoting."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

# Nothing leaves a site or the coordinator on Flower's behalf: no telemetry, no update check.
QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}

INSECURE_BANNER = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! INSECURE MODE: no TLS and no SuperNode authentication. Model updates travel   !!
!! in plain text and any machine that reaches this port can join. Use it only on  !!
!! a closed test network, never with real patient data.                           !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


def executable(name: str) -> str:
    """A Flower executable: the one installed beside this Python, else the first on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install FedUMIT (it brings flwr) first")
    return found


def flower_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for Flower processes: quiet, with this Python's scripts first on PATH
    (SuperLink and SuperNode start ``flower-superexec`` and the app processes by name)."""
    env = dict(os.environ if base is None else base)
    env.update(QUIET_ENV)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def exec_flower(argv: Sequence[str]) -> NoReturn:
    """Replace this process with a Flower executable (signals reach it directly)."""
    os.execve(argv[0], list(argv), flower_env())


def run_flwr(args: Sequence[str], capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the ``flwr`` CLI with ``args``."""
    return subprocess.run(
        [executable("flwr"), *args],
        env=flower_env(),
        text=True,
        capture_output=capture,
        check=False,
    )


def flwr_answer(stdout: str, what: str, stderr: str = "") -> dict[str, Any]:
    """What a ``flwr ... --format json`` command answered; a ``ValueError`` saying it could not
    ``what``, with Flower's message, when it failed (flwr then often exits 0)."""
    try:
        answer = json.loads(stdout)
    except json.JSONDecodeError:
        detail = (stderr or stdout).strip() or "flwr printed nothing"
        raise ValueError(f"cannot {what}: {detail}") from None
    if not isinstance(answer, dict) or not answer.get("success"):
        message = answer.get("error-message", stdout) if isinstance(answer, dict) else stdout
        raise ValueError(f"cannot {what}: {message}")
    return answer


def toml_literal(value: str) -> str:
    """``value`` as a TOML literal string, the form Flower's ``key=value`` options parse."""
    if "'" in value or "\n" in value:
        raise ValueError(f"{value!r}: quotes and newlines cannot be passed to Flower")
    return f"'{value}'"


def warn_insecure() -> None:
    """Print the insecure-mode banner to stderr."""
    print(INSECURE_BANNER, file=sys.stderr, flush=True)
