"""Seconds and peak memory of one train round's aggregation: FedUMIT's validated streaming
strategy against Flower's built-in ``FedAvg``, for K replies of a Qwen2-VL-2B-sized LoRA.

The adapter has Qwen2-VL-2B's rank-16 LoRA shapes (q, k, v, o, gate, up, down of 28 layers:
18.5M float32 values, 74 MB); ``--values`` keeps fewer layers. Replies are real Flower
``Message`` objects made one at a time as the aggregation asks for them (as a Grid hands them
over), so both strategies see the same stream; the seconds spent making them are not counted.
Each (strategy, K) runs in a fresh process; memory is the rise of its peak RSS over its RSS just
before aggregating, so it counts everything alive at once: replies, copies and sums. Wall and
CPU seconds are both reported: on a shared machine the CPU seconds show the scaling better.

    python benchmarks/aggregate.py [--sizes 2 8 32 128] [--values 18500000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HIDDEN, KV, INTERMEDIATE, RANK, LAYERS = 1536, 256, 8960, 16, 28
MODULES = {  # Qwen2-VL-2B language model: (in, out) features of each LoRA target
    "self_attn.q_proj": (HIDDEN, HIDDEN),
    "self_attn.k_proj": (HIDDEN, KV),
    "self_attn.v_proj": (HIDDEN, KV),
    "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (HIDDEN, INTERMEDIATE),
    "mlp.up_proj": (HIDDEN, INTERMEDIATE),
    "mlp.down_proj": (INTERMEDIATE, HIDDEN),
}
VALUES_PER_LAYER = sum(RANK * (i + o) for i, o in MODULES.values())
STRATEGIES = ("fedumit", "flower-fedavg")
UPDATE_SCALE = np.float32(0.02)  # RMS per coordinate of a measured instruct round (under the bound)
FINGERPRINT, STAGE = "benchmark", "instruct"


def layout(layers: int) -> OrderedDict[str, tuple[int, int]]:
    """Array names and shapes of the rank-16 LoRA of ``layers`` layers, peft's naming."""
    shapes: OrderedDict[str, tuple[int, int]] = OrderedDict()
    for layer in range(layers):
        for module, (features_in, features_out) in MODULES.items():
            prefix = f"base_model.model.model.language_model.layers.{layer}.{module}"
            shapes[f"{prefix}.lora_A.weight"] = (RANK, features_in)
            shapes[f"{prefix}.lora_B.weight"] = (features_out, RANK)
    return shapes


def measure(strategy_name: str, replies: int, layers: int, queue) -> None:
    """Aggregate ``replies`` generated replies in this fresh process; report via ``queue``."""
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import FedAvg
    from flwr.supercore.task_identity import TaskIdentity

    from protocol import ARRAYS, META, METRICS, to_record
    from server.strategy import FedUmitStrategy

    class Nodes(Grid):
        """Just the node ids: all ``configure_train`` asks of a Grid."""

        def __init__(self, count: int) -> None:
            self.ids = list(range(1, count + 1))

        def get_node_ids(self):
            return self.ids

        run = set_run = create_message = push_messages = pull_messages = send_and_receive = None

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    shapes = layout(layers)
    rng = np.random.default_rng(0)
    current = OrderedDict((n, np.zeros(s, np.float32)) for n, s in shapes.items())
    config = ConfigRecord({"stage": STAGE, "fingerprint": FINGERPRINT})
    ours = FedUmitStrategy(min_sites=replies, min_available_sites=replies)
    messages = ours.configure_train(1, to_record(current), config, Nodes(replies))
    making = [0.0, 0.0]  # wall and CPU seconds spent making replies

    def arriving() -> Iterator[Message]:
        for message in messages:
            began = time.perf_counter(), time.process_time()
            content = RecordDict()
            content[ARRAYS] = to_record(
                {n: rng.standard_normal(s, np.float32) * UPDATE_SCALE for n, s in shapes.items()}
            )
            content[METRICS] = MetricRecord({"num-examples": float(rng.integers(10, 100))})
            content[META] = ConfigRecord(
                {"fingerprint": FINGERPRINT, "stage": STAGE, "server-round": 1, "status": "ok"}
            )
            made = Message(content=content, reply_to=message)
            making[0] += time.perf_counter() - began[0]
            making[1] += time.process_time() - began[1]
            yield made

    def aggregate(server_round: int, replies: Iterator[Message]):
        if strategy_name == "fedumit":
            return ours.aggregate_train(server_round, replies).arrays
        return FedAvg().aggregate_train(server_round, replies)[0]

    rss_before = _rss_bytes()
    began = time.perf_counter(), time.process_time()
    aggregated = aggregate(1, arriving())
    seconds = time.perf_counter() - began[0] - making[0]
    cpu_seconds = time.process_time() - began[1] - making[1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert aggregated is not None and len(aggregated) == len(shapes)
    queue.put(
        {
            "strategy": strategy_name,
            "replies": replies,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "seconds_making_replies": making[0],
            "peak_mb": max(0, peak - rss_before) / 1e6,
        }
    )


def _rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def available_bytes() -> int:
    """Memory the kernel says can be had without swapping."""
    with open("/proc/meminfo", encoding="ascii") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return int(fields["MemAvailable"].split()[0]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 8, 32, 128], help="K")
    parser.add_argument(
        "--values", type=int, default=LAYERS * VALUES_PER_LAYER, help="float32 values per reply"
    )
    parser.add_argument(
        "--memory-fraction",
        type=float,
        default=0.5,
        help="skip a run expected to need more than this share of the available memory",
    )
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/aggregate.json"))
    args = parser.parse_args()
    layers = max(1, round(args.values / VALUES_PER_LAYER))
    reply_mb = layers * VALUES_PER_LAYER * 4 / 1e6
    context = multiprocessing.get_context("spawn")
    rows = []
    for replies in args.sizes:
        for strategy_name in args.strategies:
            # Flower keeps every reply; ours a few adapter sets (sums, current, one reply)
            needed = (1.2 * replies + 4 if strategy_name != "fedumit" else 8) * reply_mb * 1e6
            if needed > args.memory_fraction * available_bytes():
                print(f"skipping {strategy_name} K={replies}: needs about {needed / 1e9:.1f} GB")
                continue
            queue = context.Queue()
            process = context.Process(target=measure, args=(strategy_name, replies, layers, queue))
            process.start()
            rows.append(queue.get())
            process.join()
    print(
        f"reply: {layers} layers, {layers * VALUES_PER_LAYER:,} float32 values, {reply_mb:.0f} MB"
    )
    print(
        f"{'K':>4} {'strategy':14} {'seconds':>8} {'cpu s':>8} {'s/reply':>8}"
        f" {'peak MB':>9} {'x reply':>8}"
    )
    for row in rows:
        row["peak_in_replies"] = row["peak_mb"] / reply_mb
        print(
            f"{row['replies']:4d} {row['strategy']:14} {row['seconds']:8.2f}"
            f" {row['cpu_seconds']:8.2f} {row['seconds'] / row['replies']:8.3f}"
            f" {row['peak_mb']:9.0f}"
            f" {row['peak_in_replies']:8.1f}"
        )
    by_key = {(r["strategy"], r["replies"]): r for r in rows}
    for replies in args.sizes:
        ours, flower = by_key.get(("fedumit", replies)), by_key.get(("flower-fedavg", replies))
        if ours and flower:
            ratio = flower["peak_mb"] / ours["peak_mb"]
            print(f"K={replies}: Flower FedAvg peak / FedUMIT peak = {ratio:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "layers": layers,
        "values": layers * VALUES_PER_LAYER,
        "reply_mb": reply_mb,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
