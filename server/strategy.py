"""The FedUMIT strategy: Flower's four hooks, with validated, streaming aggregation.

Why not Flower's ``FedAvg``: it keeps every reply until the round ends and checks consistency
only, while a FedUMIT round must (1) fold replies into a running sum as they arrive, so memory
does not grow with the number of hospitals, (2) validate each reply (fingerprint, stage and
round, ``num-examples``, names, shapes, dtypes, finiteness, update norm) and skip bad ones with a
logged reason, (3) treat a site's refusal (policy, privacy budget) as an answer rather than an
error, (4) send the frozen stage-1 adapter only to sites that do not hold it yet, and (5) check
the aggregate itself: a non-finite one fails the round instead of becoming the global model.
``aggregate_train`` takes any iterable of replies, so :func:`server.rounds.stream_replies` can
hand it replies one by one as the Grid delivers them.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from protocol import ARRAYS, CONFIG, META, METRICS, STAGE1, from_record, to_record
from server.aggregation import (
    FedAdam,
    StreamingWeightedMean,
    coordinate_median,
    first_non_finite,
    trimmed_mean,
)
from server.config import DEFAULT_MAX_NUM_EXAMPLES, DEFAULT_MAX_UPDATE_NORM
from server.validation import (
    Expectation,
    check_group_counts,
    check_train_reply,
    reply_status,
    reported_number,
)
from shared_model.tasks.scoring import count_key, is_count

log = logging.getLogger(__name__)

STREAMING = ("fedavg", "fedprox", "fedadam")


class RoundFailed(RuntimeError):
    """A training round produced no new global model: the last good one (and its checkpoint)
    stays, and the coordinator retries the round or stops."""


class TooFewReplies(RoundFailed):
    """A round ended with fewer valid replies than the minimum."""

    def __init__(self, server_round: int, valid: int, minimum: int, reasons: list[str]) -> None:
        self.server_round, self.valid, self.minimum = server_round, valid, minimum
        super().__init__(
            f"round {server_round}: {valid} valid replies, {minimum} needed "
            f"({'; '.join(reasons) or 'no replies'})"
        )


class NonFiniteAggregate(RoundFailed):
    """Valid replies combined into NaN or infinite values (float32 overflow): the aggregate
    never replaces the global model."""

    def __init__(self, server_round: int, name: str) -> None:
        self.server_round, self.name = server_round, name
        super().__init__(
            f"round {server_round}: the aggregate of array {name!r} holds NaN or infinite "
            "values; the global model is kept"
        )


@dataclass
class RoundLog:
    """What happened in one training round (written to ``metrics.jsonl``)."""

    sites: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    epsilon: dict[int, float] = field(default_factory=dict)
    train_seconds: dict[int, float] = field(default_factory=dict)  # as each site reported
    losses: list[tuple[float, float]] = field(default_factory=list)  # (loss, examples), finite
    bytes_sent: int = 0
    bytes_received: int = 0

    @property
    def train_loss(self) -> float:
        """Example-weighted mean train loss of the valid replies that reported one."""
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
        Bound on each reply's update norm per coordinate, ``||update||_2 / sqrt(n)`` over the
        adapter's ``n`` coordinates (its root-mean-square), so one bound fits any adapter size;
        0: no bound.
    max_num_examples:
        The most ``num-examples`` (and evaluation group count) a reply may claim.
    """

    def __init__(
        self,
        aggregation: str = "fedavg",
        fraction_train: float = 1.0,
        min_sites: int = 2,
        min_available_sites: int = 2,
        max_update_norm: float = DEFAULT_MAX_UPDATE_NORM,
        max_num_examples: int = DEFAULT_MAX_NUM_EXAMPLES,
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
        self.max_update_norm, self.max_num_examples = max_update_norm, max_num_examples
        self.trim_fraction, self.seed = trim_fraction, seed
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
            "FedUMIT strategy: %s, fraction %.2f, at least %d sites, update bound (RMS) %s",
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
            max_num_examples=self.max_num_examples,
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
        """Validate and fold each reply as it comes; raise :class:`TooFewReplies` when too few
        count, :class:`NonFiniteAggregate` when they combine into non-finite values."""
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
        non_finite = first_non_finite(result)
        if non_finite is not None:
            raise NonFiniteAggregate(server_round, non_finite)
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
        weight, loss = float(metrics["num-examples"]), reported_number(metrics, "train-loss")
        self.round_log.sites.append(node)
        if math.isfinite(loss):
            self.round_log.losses.append((loss, weight))
        self.round_log.train_seconds[node] = reported_number(metrics, "seconds")
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
        """Average ``<task>/<lang>/<metric>`` over sites, weighted by each group's count; a
        reply with an unusable count is skipped with a logged reason."""
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        for reply in replies:
            for key, score, weight in _weighted_scores(self._evaluation(server_round, reply)):
                sums[key] = sums.get(key, 0.0) + score * weight
                weights[key] = weights.get(key, 0.0) + weight
        if not sums:
            return None
        return MetricRecord({key: sums[key] / weights[key] for key in sorted(sums)})

    def _evaluation(self, server_round: int, reply: Message) -> Mapping[str, object]:
        """An evaluation reply's metrics when they may be averaged; empty for a refusal or an
        error, and for a reply whose group counts cannot be weights (logged with the reason)."""
        if reply_status(reply)[0] != "ok":
            return {}
        metrics = reply.content.metric_records.get(METRICS, {})
        problem = check_group_counts(metrics, self.max_num_examples)
        if problem:
            log.warning(
                "skipped the evaluation of site %s in round %d: %s",
                self._site_of(reply),
                server_round,
                problem,
            )
            return {}
        return metrics

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
        metrics = reply.content.metric_records.get(METRICS) if not reply.has_error() else None
        if metrics is not None and "epsilon" in metrics:
            self.round_log.epsilon[node] = reported_number(metrics, "epsilon")


def wait_for_nodes(grid: Grid, minimum: int, poll_seconds: float = 1.0) -> list[int]:
    """Connected node ids once at least ``minimum`` are connected."""
    import time

    while len(nodes := sorted(grid.get_node_ids())) < minimum:
        log.info("waiting for sites: %d connected, %d needed", len(nodes), minimum)
        time.sleep(poll_seconds)
    return nodes


def _weighted_scores(metrics: Mapping[str, object]) -> Iterator[tuple[str, float, float]]:
    """``(key, score, weight)`` of each finite ``<task>/<lang>/<metric>`` score, weighted by the
    count of the records behind it (``closed_accuracy`` by ``closed_count``; scores without a
    count are left out)."""
    for key in metrics:
        if key.count("/") != 2 or is_count(key.rsplit("/", 1)[1]):
            continue
        weighed_by = count_key(key, metrics)
        if weighed_by is None:
            continue
        score, weight = reported_number(metrics, key), reported_number(metrics, weighed_by)
        if weight > 0 and math.isfinite(score):
            yield key, score, weight


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
