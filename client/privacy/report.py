"""``fedumit site privacy``: the ledger as a table, the budget left, the cost of one more round;
``--init`` creates the site's ledger and audit log, ``--repair`` drops a torn last line."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from client.config import SiteConfig, load_site_config
from client.journal import JournalError
from client.privacy.accounting import Mechanism, epsilon_for
from client.privacy.ledger import LedgerEntry, PrivacyLedger
from client.records import initialize_site_records


def privacy_summary(ledger: PrivacyLedger, max_epsilon: float, delta: float) -> dict[str, Any]:
    """Per-run spend, total, budget left and the epsilon after one more round like the last."""
    entries = ledger.entries()
    runs: OrderedDict[str, dict[str, Any]] = OrderedDict()
    history: list[Mechanism] = []
    for entry in entries:
        history.append(entry.mechanism)
        run = runs.setdefault(
            entry.run_id, {"run_id": entry.run_id, "stages": [], "rounds": 0, "steps": 0}
        )
        if entry.stage not in run["stages"]:
            run["stages"].append(entry.stage)
        run["rounds"] += 1
        run["steps"] += entry.steps
        run["unsettled"] = run.get("unsettled", 0) + (not entry.settled)
        run["without_dp"] = run.get("without_dp", 0) + (not entry.dp)
        run["epsilon_after"] = epsilon_for(history, delta=delta, accountant=ledger.accountant)
    total = epsilon_for(history, delta=delta, accountant=ledger.accountant)
    summary: dict[str, Any] = {
        "ledger": str(ledger.path),
        "privacy_unit": ledger.privacy_unit(),
        "runs": list(runs.values()),
        "rounds": len(entries),
        "epsilon": total,
        "delta": delta,
        "max_epsilon": max_epsilon,
        "budget_left": max(0.0, max_epsilon - total),
        "next_round_epsilon": None,
    }
    if entries:
        last: LedgerEntry = entries[-1]
        summary["next_round_epsilon"] = epsilon_for(
            [*history, last.mechanism], delta=delta, accountant=ledger.accountant
        )
        summary["next_round"] = {
            "steps": last.steps,
            "sample_rate": last.sample_rate,
            "noise_multiplier": last.noise_multiplier,
        }
    return summary


def run_privacy_report(
    site_path: Path, as_json: bool = False, repair: bool = False, init: bool = False
) -> int:
    """Print a site's privacy ledger; non-zero when the ledger is missing or damaged."""
    config = load_site_config(site_path)
    ledger = PrivacyLedger(config.ledger_path)
    console = Console()
    try:
        if init:
            for path in initialize_site_records(config):
                console.print(f"created {path}")
        if repair and (dropped := ledger.repair()):
            console.print(
                f"[yellow]dropped a torn last line ({dropped} bytes): a round is written "
                f"before it trains, so an unfinished line never trained[/]"
            )
        summary = privacy_summary(ledger, config.policy.max_epsilon, config.policy.delta)
    except JournalError as error:
        console.print(f"[bold red]privacy ledger problem:[/] {error}")
        if not ledger.exists():
            console.print(
                "create the ledger once with `fedumit site privacy --init` (only for a site "
                "that never trained: a new ledger starts the budget from zero)"
            )
        return 2
    if as_json:
        print(json.dumps(summary, indent=2))
        return 0
    _print_summary(console, config, summary)
    return 0


def _print_summary(console: Console, config: SiteConfig, summary: dict[str, Any]) -> None:
    noise = config.policy.replayable_noise_seed
    if noise is not None:
        console.print(
            "[bold yellow]replayable noise:[/] this site keys its sampling and noise from "
            "`replayable_noise_seed` (simulations only): whoever knows the seed can remove it"
        )
    if not summary["runs"]:
        console.print(
            f"{config.name}: no training recorded yet; budget epsilon "
            f"{config.policy.max_epsilon} at delta {config.policy.delta} "
            f"(privacy unit: {summary['privacy_unit']})"
        )
        return
    table = Table(title=f"privacy ledger of {config.name} (unit: {summary['privacy_unit']})")
    for column in ("run", "stages", "rounds", "steps", "epsilon after run"):
        table.add_column(column)
    for run in summary["runs"]:
        notes = [
            f"{run[k]} {label}"
            for k, label in (("unsettled", "unsettled"), ("without_dp", "without DP"))
            if run[k]
        ]
        table.add_row(
            run["run_id"] or "-",
            ", ".join(run["stages"]),
            str(run["rounds"]) + (f" ({', '.join(notes)})" if notes else ""),
            str(run["steps"]),
            f"{run['epsilon_after']:.3f}",
        )
    console.print(table)
    console.print(
        f"spent epsilon [bold]{summary['epsilon']:.3f}[/] of {summary['max_epsilon']} "
        f"(delta {summary['delta']}); budget left {summary['budget_left']:.3f}"
    )
    console.print(
        f"one more round like the last would bring epsilon to {summary['next_round_epsilon']:.3f}"
    )
