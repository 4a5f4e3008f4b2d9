"""The cost of secure aggregation (``aggregation = "secagg"``, Flower's SecAgg+) against plain
FedAvg: rounds completed, messages and bytes each way per site and round, and seconds per round.

Both rules run the same consortium (synthetic hospitals on the tiny base, replayable site
randomness, DP-SGD with a fixed sigma, no evaluation) in Flower's simulation engine, one after
the other in one simulation, for ``--rounds`` rounds of each stage. Bytes count every record of
every message (arrays, metrics, configs: SecAgg+'s keys, shares and masked vectors travel in
config records) of the training messages at the server's Grid. Seconds are the server's wall time
per round (sites train on one shared CPU here, one after another; the stage-end evaluation is
refused by the sites' policy and costs one short exchange). A warm-up round first loads the
sites' models. Prints a table and writes JSON.

    python benchmarks/secagg.py [--sites 3] [--rounds 2] [--patients 6] [--out FILE] [--base DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
import tomllib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the in-process test Grid

import numpy as np
import tomli_w
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from client.app import build_client_app
from client.audit import AuditLog
from client.secure_aggregation import secure_aggregation_mod
from client.site import site_for
from protocol import ARRAYS, CONFIG, META, METRICS, STATUS_OK, from_record, to_record
from server.checkpoints import checkpoint_path
from server.config import RUN_DEFAULTS, RunConfig
from server.coordinator import Coordinator
from server.counting_grid import CountingGrid
from server.rounds import stream_replies
from server.rules import build_rule
from server.run_folder import RunFolder
from server.secagg import SecureRound
from server.strategy import FedUmitStrategy
from shared_model.spec import ModelSpec
from shared_model.tiny import SPEC_FILE, ensure_tiny_base
from simulations.runner import write_site_config
from simulations.synthetic import generate_consortium
from tests.server_fixtures import SiteGrid, serverapp_identity

RULES = ("fedavg", "secagg")
SCHEDULE = {
    "dp": True,
    "noise-multiplier": 1.0,
    "eval-every": 0,
    "eval-at-start": False,
    "retries": 0,
    "align.local-steps": 2,
    "instruct.local-steps": 2,
    "align.batch-size": 2,
    "instruct.batch-size": 2,
    "physical-batch-size": 4,
}


def site_configs(root: Path, spec_file: Path, sites: int, patients: int) -> list[Path]:
    """Synthetic hospitals with replayable randomness and a generous budget."""
    configs = []
    for archive in generate_consortium(root / "archives", sites, patients, seed=3):
        path = write_site_config(
            root / "sites" / f"{archive.name}.toml",
            name=archive.name,
            archive=archive,
            work_dir=root / "work" / archive.name,
            model_spec=spec_file,
            max_epsilon=1e4,
            replayable_noise_seed=0,
        )
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        data["policy"].update(tasks=["caption", "classification"], max_evaluations_per_run=0)
        path.write_text(tomli_w.dumps(data), encoding="utf-8")
        configs.append(path)
    return configs


def measure(root: Path, base: Path, sites: int, rounds: int, patients: int) -> list[dict[str, Any]]:
    """One row per rule and stage, on the tiny base in ``base``."""
    spec = ModelSpec.from_toml(base / SPEC_FILE)
    configs = [str(p.resolve()) for p in site_configs(root, base / SPEC_FILE, sites, patients)]
    rows: list[dict[str, Any]] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        warm_up = {**RUN_DEFAULTS, **SCHEDULE, "align.rounds": 1, "stop-after-align": True,
                   "min-available-sites": sites}  # fmt: skip
        Coordinator(  # loads the sites' models, so that neither rule pays for it
            RunConfig.from_flat(warm_up), spec, RunFolder(root / "runs" / "warm-up").create({})
        ).run(grid)
        for rule in RULES:
            settings = {
                **SCHEDULE,
                "aggregation": rule,
                "align.rounds": rounds,
                "instruct.rounds": rounds,
                "min-sites": sites,
                "min-available-sites": sites,
            }
            align = RunFolder(root / "runs" / f"{rule}-align").create({})
            stages = {  # one run per stage, so that each stage's traffic is counted apart
                "align": (align, {"stop-after-align": True}),
                "instruct": (
                    RunFolder(root / "runs" / f"{rule}-instruct").create({}),
                    {"stage1-adapter": str(checkpoint_path(align.checkpoints, "align", rounds))},
                ),
            }
            stage1 = None
            for stage, (folder, stage_settings) in stages.items():
                config = RunConfig.from_flat({**RUN_DEFAULTS, **settings, **stage_settings})
                counting = TrainingTraffic(grid)
                outcome = Coordinator(config, spec, folder).run(counting, stage1=stage1)
                rows.append(row_of(rule, stage, folder, outcome.arrays[stage], counting))
                stage1 = outcome.arrays.get("align")

    run_simulation(
        server_app=server_app,
        client_app=build_client_app(
            lambda context: site_for(configs[int(context.node_config["partition-id"])])
        ),
        num_supernodes=sites,
        backend_config={
            "client_resources": {"num_cpus": 2, "num_gpus": 0.0},
            "init_args": {"logging_level": logging.WARNING},
        },
    )
    return rows


class TrainingTraffic(CountingGrid):
    """Counts training messages only (the sites refuse the stage-end evaluation, which is not
    what is compared)."""

    def _count_sent(self, messages: list[Message], sizes: list[int]) -> None:
        kept = [(m, n) for m, n in zip(messages, sizes, strict=True) if _training(m)]
        super()._count_sent([m for m, _ in kept], [n for _, n in kept])

    def _count_received(self, replies: list[Message]) -> None:
        super()._count_received([reply for reply in replies if _training(reply)])


def _training(message: Message) -> bool:
    return message.metadata.message_type == MessageType.TRAIN


def row_of(rule: str, stage: str, folder: RunFolder, arrays, counting: CountingGrid) -> dict:
    """Rounds completed, per-site bytes and messages per round, seconds per round."""
    trained = [r for r in folder.metrics() if r.get("round", 0) >= 1 and "seconds" in r]
    sites, per = len(trained[0]["sites"]), len(trained) * len(counting.sent)
    seconds = [r["seconds"] for r in trained]
    return {
        "rule": rule,
        "stage": stage,
        "rounds": len(trained),
        "sites": sites,
        "adapter_values": int(sum(a.size for a in arrays.values())),
        "messages_per_round_per_site": counting.messages / per,
        "bytes_to_site_per_round": sum(counting.sent.values()) / per,
        "bytes_from_site_per_round": sum(counting.received.values()) / per,
        "seconds_per_round": sum(seconds) / len(seconds),
    }


@dataclass
class _BenchSite:
    """What the site's secure-aggregation mod uses of a site: its audit log and its log."""

    audit: AuditLog
    log: logging.Logger


def protocol_rows(root: Path, values: int, sites: int) -> list[dict[str, Any]]:
    """One round of each rule at an adapter of ``values`` float32 coordinates, without
    training: in-process sites answer the global arrays plus noise, through FedUMIT's
    secure-aggregation mod and Flower's ``secaggplus_mod``; the same strategy and
    :class:`~server.secagg.SecureRound` as a run. Seconds are split into the sites' (masking)
    and the server's (unmasking, aggregation)."""
    arrays = OrderedDict(lora=np.zeros(values, np.float32))
    config = ConfigRecord({"stage": "instruct", "fingerprint": "bench", "server-round": 1})
    rows = []
    with serverapp_identity():
        for rule in RULES:
            nodes = {n: _Answering(root / f"{rule}-{n}", n) for n in range(1, 1 + sites)}
            grid = CountingGrid(SiteGrid(nodes))
            strategy = FedUmitStrategy(build_rule(_run_config(rule, sites)), min_sites=sites,
                                       min_available_sites=sites)  # fmt: skip
            began = time.perf_counter()
            if rule == "secagg":
                SecureRound(strategy, reconstruction_threshold=0.6, timeout=600).run(
                    grid, 1, to_record(arrays), config
                )
            else:
                messages = strategy.configure_train(1, to_record(arrays), config, grid)
                strategy.aggregate_train(1, stream_replies(grid, messages, 600))
            seconds = time.perf_counter() - began
            site_seconds = sum(site.seconds for site in nodes.values())
            rows.append(
                {
                    "rule": rule,
                    "stage": "protocol only",
                    "rounds": 1,
                    "sites": sites,
                    "adapter_values": values,
                    "messages_per_round_per_site": grid.messages / sites,
                    "bytes_to_site_per_round": sum(grid.sent.values()) / sites,
                    "bytes_from_site_per_round": sum(grid.received.values()) / sites,
                    "seconds_per_round": seconds,
                    "site_seconds_per_site": site_seconds / sites,
                    "server_seconds": seconds - site_seconds,
                }
            )
    return rows


def _run_config(rule: str, sites: int) -> RunConfig:
    return RunConfig.from_flat({**RUN_DEFAULTS, "aggregation": rule, "min-sites": sites})


class _Answering:
    """An in-process site: a ClientApp (with the secure-aggregation mod) and its Context."""

    def __init__(self, root: Path, node: int) -> None:
        root.mkdir(parents=True)
        audit = AuditLog(root / "audit.jsonl")
        audit.initialize(site=f"site-{node}")
        self.name, self.seconds = f"site-{node}", 0.0
        self.site = _BenchSite(audit, logging.getLogger(self.name))
        self.context = Context(run_id=1, node_id=node, node_config={}, state=RecordDict(),
                               run_config={})  # fmt: skip
        self.app = ClientApp()
        self.app.train(mods=[secure_aggregation_mod(lambda context: self.site)])(self._train)
        self.rng = np.random.default_rng(node)

    def __call__(self, message: Message) -> RecordDict:
        began = time.perf_counter()
        received = copy.deepcopy(message)  # as if sent: Flower's workflow shares content objects
        content = self.app(received, self.context).content
        self.seconds += time.perf_counter() - began
        return content

    def _train(self, message: Message, context: Context) -> Message:
        config = message.content[CONFIG]
        update = OrderedDict(
            (n, a + self.rng.normal(0, 0.01, a.shape).astype(np.float32))
            for n, a in from_record(message.content[ARRAYS]).items()
        )
        meta = {key: config[key] for key in ("fingerprint", "stage", "server-round")}
        content = RecordDict(
            {
                ARRAYS: to_record(update),
                METRICS: MetricRecord({"num-examples": 1.0, "seconds": 0.0}),
                META: ConfigRecord({**meta, "status": STATUS_OK, "site": self.name}),
            }
        )
        return Message(content, reply_to=message)


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    header = (
        "| rule | stage | rounds | sites | adapter values | messages/site/round "
        "| bytes to site/round | bytes from site/round | s/round | site s | server s |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        split = [r.get("site_seconds_per_site"), r.get("server_seconds")]
        site, server = (f"{x:.2f}" if x is not None else "" for x in split)
        lines.append(
            f"| {r['rule']} | {r['stage']} | {r['rounds']} | {r['sites']} | "
            f"{r['adapter_values']:,} | {r['messages_per_round_per_site']:.0f} | "
            f"{r['bytes_to_site_per_round']:,.0f} | {r['bytes_from_site_per_round']:,.0f} | "
            f"{r['seconds_per_round']:.2f} | {site} | {server} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/secagg.json"))
    parser.add_argument("--base", type=Path, help="a built tiny base (default: the cached one)")
    parser.add_argument(
        "--values", type=int, nargs="*", default=[35_840, 4_600_000, 18_500_000],
        help="adapter sizes of the protocol-only rounds (Qwen2-VL-2B's rank-16 LoRA: 18.5 M)",
    )  # fmt: skip
    parser.add_argument("--no-simulation", action="store_true", help="protocol-only rows only")
    args = parser.parse_args()
    base = None if args.no_simulation else args.base or ensure_tiny_base(progress=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedumit-secagg-") as root:
        if base is not None:
            rows += measure(Path(root) / "simulation", base, args.sites, args.rounds, args.patients)
        for values in args.values:
            rows += protocol_rows(Path(root) / f"protocol-{values}", values, args.sites)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {**vars(args), "out": str(args.out), "base": str(base or "")}
    args.out.write_text(json.dumps({"args": settings, "rows": rows}, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
