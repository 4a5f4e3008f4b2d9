"""Round overhead of a real deployment: three hospitals' SuperNodes and a SuperLink over TLS on
loopback, ``fedumit launch`` running both stages on synthetic archives and the tiny base.

For each round without evaluation (every round but a stage's last), the overhead is the round's
wall time at the coordinator minus the slowest site's training time as the site reported it:
message transfer, each SuperNode starting a ClientApp process and loading the model, reply
validation and aggregation, checkpointing. Split in two: the slowest site's time inside its
ClientApp (from its audit log: message recorded to reply recorded, which includes its training)
and the rest of the round's wall time (Flower's polling and transfers, the server's work).
Printed next to the bytes sent to and received from each site per round and the adapter's
size. Prints a table and writes JSON.

    python benchmarks/round_overhead.py [--rounds 3] [--local-steps 10] [--cold] [--base DIR]
        [--out benchmarks/results/round_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from client.audit import RECEIVED, REPLIED, AuditLog
from server.checkpoints import checkpoint_path, load_checkpoint
from shared_model.tiny import SPEC_FILE, ensure_tiny_base, tiny_spec
from simulations.synthetic import generate_consortium
from tests.deploy_fixtures import Consortium, running, wait_for

SITES = 3


def measure(
    root: Path, base: Path, rounds: int, local_steps: int, warm: bool
) -> tuple[list[dict[str, Any]], Path]:
    """Run a deployment over the tiny base in ``base`` to export (``warm``: SuperNodes keep
    the ClientApp loaded); the run's records and its run folder."""
    with running(root) as processes:
        consortium = Consortium(root, processes, base / SPEC_FILE, "bench", "overhead")
        consortium.supernode_flags = () if warm else ("--cold",)
        consortium.start(generate_consortium(root / "archives", n_sites=SITES, patients=8))
        consortium.launch(
            f"align.rounds={rounds} instruct.rounds={rounds} "
            f"align.local-steps={local_steps} instruct.local-steps={local_steps} "
            f"eval-every=0 eval-at-start=false min-sites={SITES} min-available-sites={SITES}"
        )
        print(f"running {SITES} sites x {rounds} rounds per stage ...", flush=True)
        export = consortium.run_folder / "export"
        wait_for(export.is_dir, 3600, "the run's export", interval=2.0)
        records = consortium.records()
        for record in records:
            record["app_seconds"] = app_seconds(root / "work", record["stage"], record["round"])
        return records, consortium.run_folder


def app_seconds(work: Path, stage: str, server_round: int) -> dict[str, float]:
    """Seconds each site's ClientApp spent on the round's train messages, from its audit log
    (message recorded on arrival to reply recorded before it left)."""
    spent = {}
    for site in sorted(p for p in work.iterdir() if (p / "audit.jsonl").is_file()):
        arrived = 0.0
        for entry in AuditLog(site / "audit.jsonl").records():
            if (entry.get("message_type"), entry.get("stage")) != ("train", stage):
                continue
            if entry.get("server_round") != server_round:
                continue
            if entry["event"] == RECEIVED:
                arrived = entry["time"]
            elif entry["event"] == REPLIED:
                spent[site.name] = spent.get(site.name, 0.0) + entry["time"] - arrived
    return spent


def rows_of(records: list[dict[str, Any]], rounds: int, folder: Path, spec) -> list[dict]:
    """One row per round without evaluation."""
    rows = []
    for record in records:
        if not 1 <= record.get("round", 0) < rounds:
            continue
        stage, server_round = record["stage"], record["round"]
        arrays = load_checkpoint(
            checkpoint_path(folder / "checkpoints", stage, server_round), spec.fingerprint()
        ).arrays
        slowest = max(record["site_seconds"].values())
        in_app = max(record["app_seconds"].values())
        sites = len(record["sites"])
        rows.append(
            {
                "stage": stage,
                "round": server_round,
                "wall_seconds": record["seconds"],
                "slowest_site_train_seconds": slowest,
                "overhead_seconds": record["seconds"] - slowest,
                "slowest_site_app_seconds": in_app,
                "outside_app_seconds": record["seconds"] - in_app,
                "sent_bytes_per_site": sum(record["bytes_sent"]["train"].values()) / sites,
                "received_bytes_per_site": sum(record["bytes_received"]["train"].values()) / sites,
                "adapter_bytes": sum(a.nbytes for a in arrays.values()),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per stage (>= 2)")
    parser.add_argument("--local-steps", type=int, default=10)
    parser.add_argument("--base", type=Path, help="a tiny base directory (default: the cache)")
    parser.add_argument(
        "--cold",
        dest="warm",
        action="store_false",
        help="fedumit supernode --cold (a fresh ClientApp process per message)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/round_overhead.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedumit-overhead-") as directory:
        base = ensure_tiny_base(args.base, progress=True)  # default: the machine's cache
        records, folder = measure(Path(directory), base, args.rounds, args.local_steps, args.warm)
        rows = rows_of(records, args.rounds, folder, tiny_spec(base))
    print(
        f"{'stage':9} {'round':>5} {'wall s':>7} {'train s':>8} {'overhead s':>10}"
        f" {'in app s':>8} {'outside s':>9}"
        f" {'sent/site MB':>12} {'recv/site MB':>12} {'adapter MB':>10}"
    )
    for row in rows:
        print(
            f"{row['stage']:9} {row['round']:5d} {row['wall_seconds']:7.1f}"
            f" {row['slowest_site_train_seconds']:8.1f} {row['overhead_seconds']:10.1f}"
            f" {row['slowest_site_app_seconds']:8.1f} {row['outside_app_seconds']:9.1f}"
            f" {row['sent_bytes_per_site'] / 1e6:12.3f}"
            f" {row['received_bytes_per_site'] / 1e6:12.3f} {row['adapter_bytes'] / 1e6:10.3f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"sites": SITES, "local_steps": args.local_steps, "warm": args.warm, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
