"""``fedumit site check``: what a site's archive gives the model, and every problem in it."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from client.archive.loader import ArchiveReport, load_site_samples
from client.archive.manifest import Problem
from client.config import load_site_config
from shared_model.spec import ModelSpec

DEFAULT_CANVAS, DEFAULT_SLICES = 448, 8
EXAMPLES_PER_REASON = 3


PUBLIC_ROLES = {"subspace": "gradient directions only", "contrast": "contrast images only"}
"""The site config sections that name a public archive, and what each uses it for."""


def run_site_check(site_path: Path, json_path: Path | None = None) -> int:
    """Read the whole archive (and the ``[subspace]`` and ``[contrast]`` public archives, if
    any), print a summary; 0 when at least one record of each is usable."""
    config = load_site_config(site_path)
    canvas, slices = DEFAULT_CANVAS, DEFAULT_SLICES
    if config.model_spec is not None:
        spec = ModelSpec.from_toml(config.model_spec)
        canvas, slices = spec.canvas, spec.volume_slices
    console = Console()
    samples, report = load_site_samples(config, canvas=canvas, slices=slices, progress=True)
    print_report(config.name, report, console)
    summary, usable = report.to_dict(), bool(report.usable)
    for section, role in PUBLIC_ROLES.items():
        if getattr(config, section) is None:
            continue
        public_config = config.public_archive_config(section)
        public, public_report = load_site_samples(
            public_config, canvas=canvas, slices=slices, progress=True
        )
        console.rule(rf"\[{section}] public archive: {role}, never trained on")
        print_report(public_config.name, public_report, console)
        shared = sorted({s.patient_id for s in samples} & {s.patient_id for s in public})
        if shared:
            console.print(
                f"[bold yellow]{len(shared)} patient ids of the public archive are also in the "
                f"site's archive (such as {', '.join(shared[:3])}): make sure its records are "
                "public, not the site's own[/]"
            )
        key = "public_archive" if section == "subspace" else f"{section}_public_archive"
        summary[key] = {**public_report.to_dict(), "shared_patient_ids": len(shared)}
        usable = usable and bool(public_report.usable)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return 0 if usable else 1


def print_report(name: str, report: ArchiveReport, console: Console) -> None:
    """The summary tables and the problems grouped by reason."""
    console.print(
        f"[bold]{name}[/]: {report.usable} of {report.records} records usable, "
        f"{report.patients} patients, {report.images_2d} 2D images, {report.volumes_3d} volumes "
        f"({report.decoded} decoded, {report.cache_hits} from cache)"
    )
    table = Table(title="usable records")
    table.add_column("by")
    table.add_column("counts")
    for label, counter in (
        ("task", report.by_task),
        ("language", report.by_lang),
        ("modality", report.by_modality),
        ("split", report.by_split),
    ):
        table.add_row(label, ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "-")
    console.print(table)
    if report.warnings:
        console.print(f"[bold yellow]{len(report.warnings)} records used in part[/]")
        print_grouped(report.warnings, "yellow", console)
    if not report.problems:
        console.print("[green]no problems found[/]")
        return
    console.print(f"[bold red]{len(report.problems)} records skipped[/]")
    print_grouped(report.problems, "red", console)


def print_grouped(problems: list[Problem], colour: str, console: Console) -> None:
    """Problems (or warnings) grouped by kind, largest group first, a few examples each."""
    grouped = defaultdict(list)
    for problem in problems:
        grouped[problem.kind].append(problem)
    for kind, group in sorted(grouped.items(), key=lambda item: -len(item[1])):
        console.print(f"  [{colour}]{kind}[/] ({len(group)})")
        for problem in group[:EXAMPLES_PER_REASON]:
            console.print(
                f"    record {problem.record_id} (line {problem.line}, "
                f"{problem.file}): {problem.reason}"
            )
