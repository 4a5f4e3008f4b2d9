"""The coordinator's side of a run: ``flwr run`` with FedUMIT's run config, and run status."""

from __future__ import annotations

import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.flower import flwr_answer, toml_literal
from server.launch_claim import checked_launch_id
from server.run_folder import RunFolder


def launch_args(
    app: Path,
    federation: str,
    run_config: list[str],
    resume: Path | None,
    stream: bool,
    launch_id: str | None = None,
) -> list[str]:
    """``flwr`` arguments that start a FedUMIT run on connection ``federation`` as launch
    ``launch_id`` (default: a random id)."""
    refuse_legacy_federations(app)
    args = ["run", str(app.resolve()), federation]
    for override in run_config:
        args += ["--run-config", override]
    if resume is not None:
        if not (resume / "config.json").is_file():
            raise FileNotFoundError(f"cannot resume: {resume} is not a run folder")
        args += ["--run-config", f"resume={toml_literal(str(resume.resolve()))}"]
    # one ServerApp per launch even if Flower starts it twice (server/launch_claim.py)
    launch_id = checked_launch_id(launch_id or uuid.uuid4().hex)
    args += ["--run-config", f"launch-id={toml_literal(launch_id)}"]
    if stream:
        args.append("--stream")
    return args


def refuse_legacy_federations(app: Path) -> None:
    """Stop before ``flwr run`` would rewrite the app's pyproject.toml: Flower 1.42 moves a
    legacy ``[tool.flwr.federations]`` table into its own config and comments it out."""
    pyproject = tomllib.loads((app / "pyproject.toml").read_text(encoding="utf-8"))
    if "federations" in pyproject.get("tool", {}).get("flwr", {}):
        raise ValueError(
            f"{app / 'pyproject.toml'} has [tool.flwr.federations]; Flower 1.42 reads "
            "SuperLink connections from $FLWR_HOME/config.toml (fedumit launch --superlink "
            "writes one) and would comment that table out in place. Remove it first."
        )


@dataclass(frozen=True)
class RunProgress:
    """Where a run folder stands."""

    run: str
    stage: str
    round: int
    rounds: dict[str, int]
    exported: bool

    def describe(self) -> str:
        """One line for people."""
        if not self.stage:
            return f"run {self.run}: no round finished yet"
        planned = self.rounds.get(self.stage, 0)
        done = ", exported" if self.exported else ""
        return f"run {self.run}: stage {self.stage}, round {self.round}/{planned}{done}"


def run_progress(folder: Path) -> RunProgress:
    """The last finished round of a run folder (from ``metrics.jsonl``)."""
    run_folder = RunFolder(folder)
    config = run_folder.config()
    rounds = {name: int(config["run"][name]["rounds"]) for name in ("align", "instruct")}
    records = [r for r in run_folder.metrics() if "stage" in r and "round" in r]
    last: dict[str, Any] = records[-1] if records else {"stage": "", "round": 0}
    return RunProgress(
        run=run_folder.run_id,
        stage=str(last["stage"]),
        round=int(last["round"]),
        rounds=rounds,
        exported=(folder / "export").is_dir(),
    )


def latest_run(run_dir: Path) -> Path | None:
    """The newest run folder under ``run_dir`` (by name; run ids sort by time)."""
    runs = sorted(p for p in run_dir.glob("*") if (p / "config.json").is_file())
    return runs[-1] if runs else None


def site_rows(nodes_json: str) -> list[dict[str, str]]:
    """Node id, status and last online time of each registered SuperNode in
    ``flwr supernode list --format json`` (which lists unregistered ones too, such as the node
    of a site's rotated-out key)."""
    listed = flwr_answer(nodes_json, "list SuperNodes")
    keys = ("node-id", "status", "online-at")
    nodes = [n for n in listed.get("nodes", []) if n.get("status") != "unregistered"]
    return [{k: str(n.get(k, "")) for k in keys} for n in nodes]
