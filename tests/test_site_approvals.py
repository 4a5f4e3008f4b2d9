"""``fedumit site approve`` and the site's approved list, on bundles Flower's builder makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_files

from client.audit import APP_APPROVED, AuditLog
from client.config import load_site_config
from deploy.approvals import SiteApprovals
from deploy.bundles import Bundle, BundleError
from fedumit.cli import main as fedumit_main
from simulations.runner import write_site_config

PYPROJECT = """[project]
name = "demo"
version = "{version}"

[tool.flwr.app]
publisher = "fedumit"

[tool.flwr.app.components]
serverapp = "demo.server:app"
clientapp = "demo.client:app"
"""


def bundle(version: str, client_code: str) -> Bundle:
    """A FAB as ``flwr build`` makes it, of a two-module app."""
    files = {
        "pyproject.toml": PYPROJECT.format(version=version).encode(),
        "demo/__init__.py": b"",
        "demo/client.py": client_code.encode(),
        "demo/server.py": b"app = None\n",
    }
    return Bundle(build_fab_from_files(files)[0])


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site config whose ledger and audit log exist."""
    return write_site_config(
        tmp_path / "site.toml",
        name="hospital-a",
        archive=tmp_path / "archive",
        work_dir=tmp_path / "work",
        model_spec=tmp_path / "model.toml",
    )


def approve(site: Path, which: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = fedumit_main(["site", "approve", "--site", str(site), which])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_approve_records_sha_version_and_what_changed(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = bundle("1.0.0", "app = 1\n"), bundle("1.1.0", "app = 1\nextra = 2\n")
    for item in (first, second):
        (tmp_path / f"{item.version}.fab").write_bytes(item.content)

    code, out = approve(site, str(tmp_path / "1.0.0.fab"), capsys)
    assert code == 0 and f"approved fedumit/demo 1.0.0 sha256 {first.sha256}" in out
    assert "the first bundle approved at this site" in out
    code, out = approve(site, str(tmp_path / "1.1.0.fab"), capsys)
    assert code == 0 and f"approved fedumit/demo 1.1.0 sha256 {second.sha256}" in out
    assert f"changes since fedumit/demo 1.0.0 sha256 {first.sha256}" in out
    assert "2 changed, 0 added, 0 removed" in out  # pyproject.toml (the version) and the module
    assert "+extra = 2" in out and '+version = "1.1.0"' in out
    code, out = approve(site, str(tmp_path / "1.0.0.fab"), capsys)
    assert code == 0 and "already approved: fedumit/demo 1.0.0" in out

    config = load_site_config(site)
    approvals = SiteApprovals(config.work_dir)
    assert [a.sha256 for a in approvals.approvals()] == [first.sha256, second.sha256]
    assert approvals.is_approved(second.sha256) and not approvals.is_approved("0" * 64)
    recorded = [r for r in AuditLog(config.audit_path).records() if r["event"] == APP_APPROVED]
    assert [(r["version"], r["previous"]) for r in recorded] == [
        ("1.0.0", None),
        ("1.1.0", first.sha256),
    ]


def test_a_refused_run_is_approved_by_its_run_id(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = bundle("2.0.0", "app = 3\n")
    config = load_site_config(site)
    kept = SiteApprovals(config.work_dir).keep_refused(refused)
    AuditLog(config.audit_path).app_refused(flower_run=4242, bundle=refused, kept=kept)
    assert kept.read_bytes() == refused.content

    code, out = approve(site, "4241", capsys)
    assert code == 2 and "no refused bundle of Flower run 4241" in out
    code, out = approve(site, "4242", capsys)
    assert code == 0 and f"approved fedumit/demo 2.0.0 sha256 {refused.sha256}" in out
    assert SiteApprovals(config.work_dir).is_approved(refused.sha256)


def test_what_is_not_a_bundle_is_refused(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.fab"
    junk.write_bytes(b"not a zip")
    code, out = approve(site, str(junk), capsys)
    assert code == 2 and "not a Flower app bundle" in out
    code, out = approve(site, "no-such-file.fab", capsys)
    assert code == 2 and "neither a .fab file nor a Flower run id" in out
    with pytest.raises(BundleError):
        _ = Bundle(b"PK\x05\x06" + bytes(18)).files  # an empty zip: no manifest
    assert Bundle(b"not a zip").identity() == (
        "unreadable: not a Flower app bundle (not a zip archive)",
        "",
    )
