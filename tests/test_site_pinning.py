"""A site runs only the app bundles it approved: real Flower processes on loopback.

A SuperLink (TLS, SuperNode authentication) and one hospital's ``fedumit supernode``: Flower's
SuperNode in process isolation with the site's executor beside it. The coordinator first
launches a bundle that differs from the approved one by one line, a line that would write a
marker file when the ClientApp module is imported, and at once the approved bundle. The site
refuses the first before importing anything: the marker never appears, the refusal (with the
bundle's SHA-256 and Flower run) is in the site's audit log as ``fedumit site audit`` shows it,
and the coordinator's record of that run names it. The approved bundle trains a round. Last,
``fedumit site approve <run>`` approves the refused bundle and names the changed line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.audit import APP_REFUSED, AuditLog
from client.config import load_site_config
from deploy.approvals import SiteApprovals
from deploy.bundles import Bundle
from deploy.site_runner import refusal_reason
from fedumit.cli import main as fedumit_main
from simulations.synthetic import generate_consortium
from tests.deploy_fixtures import Consortium, running, wait_for

pytestmark = pytest.mark.slow

RUN_CONFIG = (
    "align.rounds=1 instruct.rounds=0 align.local-steps=1 align.batch-size=2 "
    "physical-batch-size=4 eval-every=0 eval-at-start=false min-sites=1 min-available-sites=1 "
    "round-timeout=120.0 retries=0"
)


def tampered_copy(app: Path, folder: Path, marker: Path) -> Path:
    """``app`` with one line added to its ClientApp module: write ``marker`` when imported."""
    from flwr.cli.build import build_fab_from_disk

    bundle = Bundle(build_fab_from_disk(app))
    copy = folder / "fedumit"
    for path, _ in bundle.files.items():
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        (copy / path).write_bytes((app / path).read_bytes())
    module = copy / "client" / "app.py"
    line = f"__import__('pathlib').Path({str(marker)!r}).write_text('imported')\n"
    module.write_text(module.read_text(encoding="utf-8") + line, encoding="utf-8")
    return copy


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    """Lines a ``fedumit`` command printed (run in this process); it must succeed."""
    assert fedumit_main(list(args)) == 0, capsys.readouterr()
    return capsys.readouterr().out.splitlines()


def test_only_the_approved_bundle_runs_at_the_site(
    tmp_path: Path, tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared_model.tiny import SPEC_FILE

    marker = tmp_path / "marker"
    [archive] = generate_consortium(tmp_path / "archives", n_sites=1, patients=4, seed=0)
    with running(tmp_path) as processes:
        c = Consortium(tmp_path, processes, tiny_base / SPEC_FILE, "pinning")
        c.start([archive])  # the site approved the snapshot c.app of this checkout
        site = c.site_configs[archive.name]
        audit = AuditLog(load_site_config(site).audit_path)
        tampered = tampered_copy(c.app, tmp_path / "tampered", marker)

        c.run_id = "tampered"
        c.launch(RUN_CONFIG, app=tampered)
        c.run_id = "approved"
        c.launch(RUN_CONFIG)
        wait_for(lambda: audit.refusals() != [], 180, "the site to refuse the tampered bundle")
        wait_for(lambda: c.checkpointed("align", 1), 300, "the approved bundle's round")

        assert c.record("align", 1)["sites"] == [archive.name]
        assert not marker.exists(), "code of the refused bundle was imported"
        [refusal] = audit.refusals()
        refused = SiteApprovals(load_site_config(site).work_dir).refused(refusal["sha256"])
        assert refusal["sha256"] != c.bundle.sha256 and refused.sha256 == refusal["sha256"]
        assert (refusal["app"], refusal["version"]) == (c.bundle.name, c.bundle.version)
        c.run_id = "tampered"
        [failed] = [r["failed"] for r in c.records() if r["round"] == 1]
        assert f"{archive.name}: {refusal_reason(refused)}" in failed  # what the coordinator saw

    shown = [
        json.loads(line) for line in cli(capsys, "site", "audit", "--site", str(site), "--json")
    ]
    assert [r for r in shown if r["event"] == APP_REFUSED] == [refusal]
    approved = "\n".join(
        cli(capsys, "site", "approve", "--site", str(site), str(refusal["flower_run"]))
    )
    assert f"approved {c.bundle.name} {c.bundle.version} sha256 {refusal['sha256']}" in approved
    assert "1 changed, 0 added, 0 removed\n  ~ client/app.py" in approved
    assert f"+__import__('pathlib').Path({str(marker)!r})" in approved
    assert not marker.exists()
