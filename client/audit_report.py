"""``fedumit site audit``: the site's audit log as a table (or JSON lines), its chain verified."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from client.audit import APP_REFUSED, RECEIVED, REPLIED, AuditLog
from client.config import load_site_config
from client.journal import JournalError


def run_audit_report(site_path: Path, as_json: bool = False) -> int:
    """Print every record of a site's audit log; exit code 2 when the log does not verify."""
    config = load_site_config(site_path)
    console = Console()
    try:
        records = AuditLog(config.audit_path).records()
    except JournalError as error:
        console.print(f"[bold red]audit log problem:[/] {error}")
        return 2
    if as_json:
        for record in records:
            print(json.dumps(record, ensure_ascii=False))
        return 0
    table = Table(title=f"audit log of {config.name} ({config.audit_path})")
    for column in ("#", "time (UTC)", "event", "message", "run / stage / round", "arrays", "sent"):
        table.add_column(column, overflow="fold")
    for record in records:
        table.add_row(*_row(record))
    console.print(table)
    replies = [r for r in records if r.get("event") == REPLIED]
    refused = sum(1 for r in replies if r.get("meta", {}).get("status") != "ok")
    console.print(
        f"{len(records)} records, chain verified: {len(replies)} replies sent "
        f"({refused} refusals), {sum(_bytes(r) for r in replies):,} array bytes sent, "
        f"{sum(r.get('event') == APP_REFUSED for r in records)} app bundles refused"
    )
    return 0


def _row(record: dict[str, Any]) -> list[str]:
    event = str(record.get("event", ""))
    when = datetime.fromtimestamp(float(record.get("time", 0)), UTC).strftime("%Y-%m-%d %H:%M:%S")
    where = " / ".join(
        str(record.get(key, "")) for key in ("run_id", "stage", "server_round") if key in record
    )
    arrays = ", ".join(
        f"{name} {info['bytes']:,} B sha256 {info['sha256'][:12]}"
        for name, info in record.get("arrays", {}).items()
    )
    if event == RECEIVED:
        sent = (
            f"ignored keys: {', '.join(record['ignored_keys'])}" if record["ignored_keys"] else ""
        )
    elif event == REPLIED:
        meta = record.get("meta", {})
        status = meta.get("status", "")
        if meta.get("reason"):
            status += f" ({meta['reason']})"
        metrics = ", ".join(f"{k}={v:g}" for k, v in sorted(record.get("metrics", {}).items()))
        sent = f"{status}; {metrics}"
    else:
        sent = ", ".join(f"{k}={v}" for k, v in record.items() if k not in ("seq", "prev", "time"))
    return [
        str(record["seq"]),
        when,
        event,
        str(record.get("message_type", "")),
        where,
        arrays,
        sent,
    ]


def _bytes(record: dict[str, Any]) -> int:
    return sum(int(info.get("bytes", 0)) for info in record.get("arrays", {}).values())
