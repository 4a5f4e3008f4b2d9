"""``fedumit launch`` end to end: a SuperLink, two SuperNodes, both stages, a run folder."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from deploy.pki import add_site, init_pki
from simulations.runner import write_site_config
from simulations.synthetic import generate_consortium
from tests.deploy_fixtures import (
    REPO_ROOT,
    Processes,
    fedumit_argv,
    free_port,
    serves_tls,
    wait_for,
)

FEDERATION = "e2e"


def run_fedumit(processes: Processes, *args: str) -> str:
    """Run one ``fedumit`` command to completion and return what it printed."""
    done = subprocess.run(
        fedumit_argv(*args), env=processes.env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_launch_runs_both_stages_over_real_supernodes(
    tmp_path: Path, processes: Processes, tiny_base: Path
) -> None:
    from shared_model.tiny import SPEC_FILE

    pki = tmp_path / "pki"
    init_pki(pki, ["localhost"])
    port = free_port()
    address = f"127.0.0.1:{port}"
    link_argv = fedumit_argv(
        "superlink", "--pki", str(pki), "--database", str(tmp_path / "link.db"),
        "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    link = processes.start("superlink", link_argv, cwd=tmp_path)
    archives = generate_consortium(tmp_path / "archives", n_sites=2, patients=4, seed=0)
    wait_for(lambda: serves_tls(port, pki / "ca.crt") or link.poll() is not None, 60, "SuperLink")
    assert link.poll() is None, processes.log("superlink")
    for archive in archives:
        add_site(pki, archive.name)
        run_fedumit(
            processes, "pki", "register", archive.name, "--out", str(pki),
            "--federation", FEDERATION, "--superlink", address,
        )  # fmt: skip
        site = write_site_config(
            tmp_path / "sites" / f"{archive.name}.toml",
            name=archive.name,
            archive=archive,
            work_dir=tmp_path / "work" / archive.name,
            model_spec=tiny_base / SPEC_FILE,
        )
        node_argv = fedumit_argv(
            "supernode", "--site", str(site), "--superlink", address, "--pki", str(pki),
            "--runtime-port", str(free_port()),
        )  # fmt: skip
        processes.start(archive.name, node_argv, cwd=tmp_path)
    overrides = (
        f"run-dir='{tmp_path / 'runs'}' run-id='e2e' model-spec='{tiny_base / SPEC_FILE}' "
        "align.rounds=1 instruct.rounds=1 align.local-steps=2 instruct.local-steps=2 "
        "align.batch-size=2 instruct.batch-size=2 physical-batch-size=4 eval-every=0 "
        "eval-at-start=false round-timeout=600.0"
    )
    started = time.monotonic()
    run_fedumit(
        processes, "launch", "--federation", FEDERATION, "--app", str(REPO_ROOT),
        "--run-config", overrides,
    )  # fmt: skip
    folder = tmp_path / "runs" / "e2e"
    wait_for(lambda: (folder / "export").is_dir(), 600, "the exported model")
    print(f"launch to export: {time.monotonic() - started:.1f}s")
    status = run_fedumit(processes, "status", "--federation", FEDERATION, "--run", str(folder))
    assert "2 of 2 sites online" in status
    assert "stage instruct, round 1/1, exported" in status
    assert (folder / "config.json").is_file() and (folder / "metrics.jsonl").is_file()
