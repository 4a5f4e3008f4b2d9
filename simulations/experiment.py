"""The simulation experiment behind ``fedumit simulate``: base, hospitals, run, report."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rich.console import Console

from server.run_folder import new_run_id
from shared_model.spec import ModelSpec
from simulations.datasets import public_archives
from simulations.heldout import answer_heldout
from simulations.report import final_table, print_answers, print_final_table
from simulations.runner import simulate, write_site_config
from simulations.synthetic import generate_consortium

log = logging.getLogger(__name__)


def model_spec_file(out: Path, base: Path | None) -> Path:
    """The model spec TOML: a given checkpoint with default layout, or the tiny base's own."""
    if base is not None:
        return ModelSpec(base=base.resolve()).write_toml(out / "model.toml")
    from shared_model.tiny import SPEC_FILE, ensure_tiny_base

    return ensure_tiny_base(out / "tiny-base") / SPEC_FILE


def site_archives(args: argparse.Namespace) -> list[Path]:
    """Existing archives, a public dataset split across hospitals, or synthetic hospitals."""
    if args.archives:
        return [Path(a).resolve() for a in args.archives]
    if args.dataset != "synthetic":
        return public_archives(
            args.dataset,
            args.out / "archives",
            data_root=args.data_root,
            sites=args.sites,
            partition=args.partition,
            limit=args.limit,
            seed=args.seed,
            alpha=args.alpha,
        )
    return generate_consortium(
        args.out / "archives", n_sites=args.sites, patients=args.patients, seed=args.seed
    )


def run_experiment(args: argparse.Namespace) -> int:
    """Build everything a simulated consortium needs, run it, and print what it learned."""
    console = Console()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]FedUMIT simulation")
    console.print("1/4 base model")
    spec_file = model_spec_file(out, args.base)
    console.print("2/4 hospitals")
    archives = site_archives(argparse.Namespace(**{**vars(args), "out": out}))
    run_id = new_run_id()
    sites = [
        write_site_config(
            out / "runs" / run_id / "sites" / f"{archive.name}.toml",
            name=archive.name,
            archive=archive,
            work_dir=out / "runs" / run_id / "work" / archive.name,
            model_spec=spec_file,
            max_epsilon=args.epsilon,
            require_dp=args.dp,
        )
        for archive in archives
    ]
    console.print(
        f"3/4 federated run {run_id}: {len(sites)} sites, align "
        f"{args.align_rounds} rounds, instruct {args.instruct_rounds} rounds, "
        f"DP {'on, epsilon ' + str(args.epsilon) if args.dp else 'off'}"
    )
    overrides = {
        "run-dir": str(out / "runs"),
        "run-id": run_id,
        "model-spec": str(spec_file),
        "seed": args.seed,
        "dp": args.dp,
        "aggregation": args.aggregation,
        "min-sites": min(2, len(sites)),
        "min-available-sites": len(sites),
        "eval-every": 2,
        "align.rounds": args.align_rounds,
        "align.local-steps": args.align_steps,
        "instruct.rounds": args.instruct_rounds,
        "instruct.local-steps": args.instruct_steps,
    }
    folder = simulate(sites, overrides)
    rows = final_table(folder.metrics())
    export = folder.root / "export"
    console.print("4/4 held-out questions")
    answers = answer_heldout(export, sites) if export.is_dir() else []
    if args.json:
        print(
            json.dumps(
                {"run": str(folder.root), "table": rows, "answers": answers},
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        print_final_table(rows, console)
        print_answers(answers, console)
        console.print(f"run folder: {folder.root}\nexported model: {export}\nplots: {folder.plots}")
    return 0 if export.is_dir() else 1
