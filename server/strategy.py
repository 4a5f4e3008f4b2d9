"""The FedUMIT strategy: Flower's four hooks, with validated, streaming aggregation.

Why not Flower's ``FedAvg``: it keeps every reply until the round ends and checks consistency
only, while a FedUMIT round must (1) fold replies into a running sum as they arrive, so memory
does not grow with the number of hospitals, (2) validate each reply (fingerprint, stage and
round, names, shapes, dtypes, finiteness, update norm) and skip bad ones with a logged reason,
(3) treat a site's refusal (policy, privacy budget) as an answer rather than an error, and
(4) send the frozen stage-1 adapter only to sites that do not hold it yet.
``aggregate_train`` takes any iterable of replies, so :func:`server.rounds.stream_replies` can
hand it replies one by one as the Grid delivers them.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from protocol import ARRAYS, CONFIG, META, METRICS, STAGE1, from_record, to_record
from server.aggregation import FedAdam, StreamingWeightedMean, coordinate_median, trimmed_mean
from server.validation import Expectation, check_train_reply, reply_status

log = logging.getLogger(__name__)

STREAMING = ("fedavg", "fedprox", "fedadam")


class TooFewReplies(RuntimeError):
    """A round ended with fewer valid replies than the minimum."""

    def __init__(self, server_round: int, valid: int, minimum: int, reasons: list[str]) -> None:
        self.server_round, self.valid, self.minimum = server_round, valid, minimum
        super().__init__(
            f"round {server_round}: {valid} valid replies, {minimum} needed "
            f"({'; '.join(reasons) or 'no replies'})"
        )


@dataclass
class RoundLog:
    """What happened in one training round (written to ``metrics.jsonl``)."""

    sites: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    epsilon: dict[int, float] = field(default_factory=dict)
    train_seconds: dict[int, float] = field(default_factory=dict)  # as each site reported
    losses: list[tuple[float, float]] = field(default_factory=list)  # (loss, examples)
    bytes_sent: int = 0
    bytes_received: int = 0

    @property
    def train_loss(self) -> float:
        """Example-weighted mean train loss of the valid replies."""
        total = sum(w for _, w in self.losses)
        return sum(loss * w for loss, w in self.losses) / total if total else float("nan")


class FedUmitStrategy(Strategy):
    """Validated aggregation of one stage's adapter arrays.

    Parameters
    ----------
    aggregation:
        ``fedavg``, ``fedprox`` (FedAvg on the server, a proximal term at the sites),
        ``fedadam``, ``median`` or ``trimmed-mean``.
    fraction_train, min_sites, min_available_sites:
        Sampling per round and the fewest valid replies a round needs.
    max_update_norm:
        Bound on each reply's ``||update||_2`` (0: none).
    """

    def __init__(
        self,
        aggregation: str = "fedavg",
        fraction_train: float = 1.0,
        min_sites: int = 2,
        min_available_sites: int = 2,
        max_update_norm: float = 0.0,
        trim_fraction: float = 0.1,
        server_lr: float = 0.01,
        seed: int = 0,
    ) -> None:
        if aggregation not in (*STREAMING, "median", "trimmed-mean"):
            raise ValueError(f"unknown aggregation {aggregation!r}")
        if not 0.0 < fraction_train <= 1.0 or min_sites < 1:
            raise ValueError("need 0 < fraction_train <= 1 and min_sites >= 1")
        self.aggregation, self.fraction_train = aggregation, fraction_train
        self.min_sites, self.min_available_sites = min_sites, max(min_available_sites, min_sites)
        self.max_update_norm, self.trim_fraction, self.seed = max_update_norm, trim_fraction, seed
        self.optimizer = FedAdam(server_lr) if aggregation == "fedadam" else None
        self.stage1: dict[str, np.ndarray] | None = None
        self.stage1_hash = ""
        self.node_stage1: dict[int, str] = {}
        self.round_log = RoundLog()
        self._expected: Expectation | None = None
        self._current: dict[str, np.ndarray] = {}
        self._sent: list[Metadata] = []  # of this round's messages (ids are set on push)

    def summary(self) -> None:
        """Log the strategy's settings."""
        log.info(
            "FedUMIT strategy: %s, fraction %.2f, at least %d sites, update bound %s",
            self.aggregation,
            self.fraction_train,
            self.min_sites,
            self.max_update_norm or "none",
        )

    def set_stage1(self, arrays: dict[str, np.ndarray] | None, arrays_hash: str) -> None:
        """The frozen global ``align`` adapter every ``instruct`` round builds on."""
        self.stage1, self.stage1_hash = arrays, arrays_hash

    def sample(self, grid: Grid, server_round: int) -> list[int]:
        """Wait for enough sites, then sample a seeded fraction of them (sorted ids)."""
        nodes = wait_for_nodes(grid, self.min_available_sites)
        size = max(self.min_sites, round(self.fraction_train * len(nodes)))
        rng = random.Random(self.seed * 100_003 + server_round)
        return sorted(rng.sample(nodes, min(size, len(nodes))))

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One train message per sampled site; ``stage1`` only for sites lacking it."""
        self._current = from_record(arrays)
        self._expected = Expectation(
            fingerprint=str(config["fingerprint"]),
            stage=str(config["stage"]),
            server_round=server_round,
            reference=self._current,
            max_update_norm=self.max_update_norm,
        )
        self.round_log = RoundLog()
        return self._messages(grid, server_round, arrays, config, "train")

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One evaluate message per connected site."""
        return self._messages(grid, server_round, arrays, config, "evaluate")

    def _messages(self, grid, server_round, arrays, config, message_type) -> list[Message]:
        nodes = self.sample(grid, server_round)
        messages = []
        for node in nodes:
            content = RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(dict(config))})
            content[CONFIG]["server-round"] = server_round
            if self.stage1 is not None and config.get("stage") == "instruct":
                content[CONFIG]["stage1-hash"] = self.stage1_hash
                if self.node_stage1.get(node) != self.stage1_hash:
                    content[STAGE1] = to_record(self.stage1)
            messages.append(Message(content=content, dst_node_id=node, message_type=message_type))
            self.round_log.bytes_sent += sum(
                r.count_bytes() for r in content.array_records.values()
            )
        self._sent = [message.metadata for message in messages]
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate and fold each reply as it comes; raise :class:`TooFewReplies` if needed."""
        expected = self._expected
        mean = StreamingWeightedMean(self._current) if self.aggregation in STREAMING else None
        buffered: list[dict[str, np.ndarray]] = []
        for reply in replies:
            try:
                admitted = self._admit(server_round, reply, expected)
                if admitted is None:
                    continue
                arrays, weight = admitted
                if mean is not None:
                    mean.fold(arrays, weight)
                else:
                    buffered.append(arrays)
            finally:
                _release(reply)
        valid = len(self.round_log.sites)
        if valid < self.min_sites:
            reasons = [
                f"site {n}: {r}"
                for n, r in {**self.round_log.rejected, **self.round_log.refused}.items()
            ]
            raise TooFewReplies(server_round, valid, self.min_sites, reasons)
        result = self._combine(mean, buffered)
        metrics = MetricRecord({"train-loss": self.round_log.train_loss, "sites": float(valid)})
        return to_record(result), metrics

    def _admit(
        self, server_round: int, reply: Message, expected
    ) -> tuple[dict[str, np.ndarray], float] | None:
        """A reply's arrays and weight when it counts, ``None`` when refused or rejected (each
        noted in the round log)."""
        node = self._site_of(reply)
        self.round_log.bytes_received += _bytes(reply)
        status, reason = reply_status(reply)
        self._remember_stage1(node, reply)
        if status == "refused":
            self.round_log.refused[node] = reason
            log.warning("site %s refused round %d: %s", node, server_round, reason)
            self._note_epsilon(node, reply)
            return None
        problem, arrays = (
            (reason or "error", None) if status != "ok" else check_train_reply(reply, expected)
        )
        if problem:
            self.round_log.rejected[node] = problem
            log.warning(
                "rejected the reply of site %s in round %d: %s", node, server_round, problem
            )
            return None
        metrics = reply.content[METRICS]
        weight = float(metrics["num-examples"])
        self.round_log.sites.append(node)
        self.round_log.losses.append((float(metrics.get("train-loss", float("nan"))), weight))
        self.round_log.train_seconds[node] = float(metrics.get("seconds", float("nan")))
        self._note_epsilon(node, reply)
        return arrays, weight

    def _combine(self, mean, buffered):
        if self.aggregation == "median":
            return coordinate_median(buffered)
        if self.aggregation == "trimmed-mean":
            return trimmed_mean(buffered, self.trim_fraction)
        averaged = mean.result()
        return self.optimizer.step(self._current, averaged) if self.optimizer else averaged

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Average ``<task>/<lang>/<metric>`` over sites, weighted by each group's count."""
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        for reply in replies:
            if reply_status(reply)[0] != "ok" or METRICS not in reply.content:
                continue
            metrics = reply.content[METRICS]
            for key, value in metrics.items():
                if key.count("/") != 2 or key.endswith("/count"):
                    continue
                task, lang, _ = key.split("/")
                weight = float(metrics.get(f"{task}/{lang}/count", 0.0))
                if weight > 0 and np.isfinite(value):
                    sums[key] = sums.get(key, 0.0) + float(value) * weight
                    weights[key] = weights.get(key, 0.0) + weight
        if not sums:
            return None
        return MetricRecord({key: sums[key] / weights[key] for key in sorted(sums)})

    def _site_of(self, reply: Message) -> int:
        """The site a reply speaks for: its sender or, for the error the SuperLink answers in
        place of a site that went offline, the site the message was sent to."""
        sender = reply.metadata.src_node_id
        if sender != SUPERLINK_NODE_ID:
            return sender
        sent_to = {metadata.message_id: metadata.dst_node_id for metadata in self._sent}
        return sent_to.get(reply.metadata.reply_to_message_id, sender)

    def _remember_stage1(self, node: int, reply: Message) -> None:
        if not reply.has_error() and META in reply.content:
            self.node_stage1[node] = str(reply.content[META].get("stage1-hash", ""))

    def _note_epsilon(self, node: int, reply: Message) -> None:
        metrics = reply.content.get(METRICS) if not reply.has_error() else None
        if metrics is not None and "epsilon" in metrics:
            self.round_log.epsilon[node] = float(metrics["epsilon"])


def wait_for_nodes(grid: Grid, minimum: int, poll_seconds: float = 1.0) -> list[int]:
    """Connected node ids once at least ``minimum`` are connected."""
    import time

    while len(nodes := sorted(grid.get_node_ids())) < minimum:
        log.info("waiting for sites: %d connected, %d needed", len(nodes), minimum)
        time.sleep(poll_seconds)
    return nodes


def _bytes(message: Message) -> int:
    if message.has_error():
        return 0
    return sum(record.count_bytes() for record in message.content.array_records.values())


def _release(reply: Message) -> None:
    """Drop a reply's adapter arrays once read: Flower records are reference cycles, so without
    this their bytes would live until the cycle collector runs, and server memory would grow
    with the number of replies."""
    if reply.has_content() and ARRAYS in reply.content:
        reply.content[ARRAYS].clear()
