"""The FedUMIT strategy: Flower's four hooks, with validated, streaming aggregation.

Why not Flower's ``FedAvg``: it keeps every reply until the round ends and checks consistency
only, while a FedUMIT round must (1) fold replies into a running sum as they arrive, so memory
does not grow with the number of hospitals, (2) validate each reply (fingerprint, stage and
round, ``num-examples``, names, shapes, dtypes, finiteness, update norm) and skip bad ones with a
logged reason, (3) treat a site's refusal (policy, privacy budget) as an answer rather than an
error, (4) send the frozen stage-1 adapter only to sites that do not hold it yet, and (5) check
the aggregate itself: a non-finite one fails the round instead of becoming the global model.
``aggregate_train`` takes any iterable of replies, so :func:`server.rounds.stream_replies` can
hand it replies one by one as the Grid delivers them. How the valid replies combine is an
aggregation rule's (:mod:`server.rules`); the strategy's state is the rule's.

The strategy reports what it did: each aggregate hook returns, with the aggregate, a
:class:`~server.round_log.RoundLog` of the round keyed by site name (:mod:`server.sites`), and
a failed round's exception carries it. That is why the class does not derive from Flower's
``Strategy``, whose ``start`` unpacks Flower's bare records: FedUMIT's coordinator drives the
rounds (streaming, retries, checkpoints), and the four hooks keep Flower's names and arguments.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid

from protocol import (
    ARRAYS,
    CONFIG,
    META,
    METRICS,
    STAGE1,
    STATUS_REFUSED,
    Refusal,
    from_record,
    to_record,
)
from server.aggregation import first_non_finite
from server.config import DEFAULT_MAX_NUM_EXAMPLES, DEFAULT_MAX_UPDATE_NORM
from server.round_log import RoundLog, RoundResult
from server.rules import AggregationRule, FedAvg
from server.sites import SiteNames
from server.validation import (
    Expectation,
    check_group_counts,
    check_train_reply,
    reply_status,
    reported_number,
)
from shared_model.spec import LORA_A
from shared_model.tasks.scoring import count_key, is_count

log = logging.getLogger(__name__)


class RoundFailed(RuntimeError):
    """A training round produced no new global model: the last good one (and its checkpoint)
    stays, and the coordinator retries the round or stops. ``log`` is what the round did."""

    def __init__(self, message: str, log: RoundLog[str]) -> None:
        self.log = log
        super().__init__(message)


class TooFewReplies(RoundFailed):
    """A round ended with fewer valid replies than the minimum."""

    def __init__(self, server_round: int, minimum: int, log: RoundLog[str]) -> None:
        self.server_round, self.valid, self.minimum = server_round, len(log.sites), minimum
        reasons = [f"{site}: {why}" for site, why in {**log.rejected, **log.refused}.items()]
        super().__init__(
            f"round {server_round}: {self.valid} valid replies, {minimum} needed "
            f"({'; '.join(reasons) or 'no replies'})",
            log,
        )


class NonFiniteAggregate(RoundFailed):
    """Valid replies combined into NaN or infinite values (float32 overflow): the aggregate
    never replaces the global model."""

    def __init__(self, server_round: int, name: str, log: RoundLog[str]) -> None:
        self.server_round, self.name = server_round, name
        super().__init__(
            f"round {server_round}: the aggregate of array {name!r} holds NaN or infinite "
            "values; the global model is kept",
            log,
        )


class FedUmitStrategy:
    """Validated aggregation of one stage's adapter arrays.

    Parameters
    ----------
    rule:
        How valid replies combine (:mod:`server.rules`); default :class:`~server.rules.FedAvg`.
    fraction_train, min_sites, min_available_sites:
        Sampling per round (default all of at least 2 connected sites) and the fewest valid
        replies a round needs (default 2).
    max_update_norm:
        Bound on each reply's update norm per coordinate, ``||update||_2 / sqrt(n)`` over the
        adapter's ``n`` coordinates (its root-mean-square), so one bound fits any adapter size;
        0: no bound (default :data:`~server.config.DEFAULT_MAX_UPDATE_NORM`).
    max_num_examples:
        The most ``num-examples`` (and evaluation group count) a reply may claim.
    seed:
        Seed of the sampling of sites per round (default 0).
    frozen_a_stages:
        Stages whose layout freezes LoRA's ``A`` matrices (``frozen_a``): a reply that changed
        one is rejected. (Under secure aggregation only the sum is seen, and this is not
        checked.)
    """

    def __init__(
        self,
        rule: AggregationRule | None = None,
        *,
        fraction_train: float = 1.0,
        min_sites: int = 2,
        min_available_sites: int = 2,
        max_update_norm: float = DEFAULT_MAX_UPDATE_NORM,
        max_num_examples: int = DEFAULT_MAX_NUM_EXAMPLES,
        seed: int = 0,
        frozen_a_stages: frozenset[str] = frozenset(),
    ) -> None:
        if not 0.0 < fraction_train <= 1.0 or min_sites < 1:
            raise ValueError("need 0 < fraction_train <= 1 and min_sites >= 1")
        self.rule = rule if rule is not None else FedAvg()
        self.fraction_train, self.seed = fraction_train, seed
        self.min_sites, self.min_available_sites = min_sites, max(min_available_sites, min_sites)
        self.max_update_norm, self.max_num_examples = max_update_norm, max_num_examples
        self.frozen_a_stages = frozen_a_stages
        self.sites = SiteNames()
        self.stage1: dict[str, np.ndarray] | None = None
        self.stage1_hash = ""
        self._stage1_record: ArrayRecord | None = None
        self.node_stage1: dict[int, str] = {}  # the stage-1 hash each site last said it holds
        self._carried_stage1: set[int] = set()  # sites this round's stage-1 adapter went to
        self._round: tuple[int, ArrayRecord, ConfigRecord, str] | None = None
        self._expected: Expectation | None = None
        self._log: RoundLog[int] = RoundLog()  # of the messages configured last
        self._sent: list[Metadata] = []  # of this round's messages (ids are set on push)

    def summary(self) -> None:
        """Log the strategy's settings."""
        log.info(
            "FedUMIT strategy: %s, fraction %.2f, at least %d sites, update bound (RMS) %s",
            self.rule.describe(),
            self.fraction_train,
            self.min_sites,
            self.max_update_norm or "none",
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        """What a resumed run needs to aggregate exactly as before (the rule's state)."""
        return self.rule.state_dict()

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`'s output; empty state starts a stage afresh."""
        self.rule.load_state_dict(state)

    def set_stage1(self, arrays: dict[str, np.ndarray] | None, arrays_hash: str) -> None:
        """The frozen global ``align`` adapter every ``instruct`` round builds on, and its
        :func:`protocol.arrays_sha256`: sent to a site once, then announced by hash."""
        self.stage1, self.stage1_hash = arrays, arrays_hash
        self._stage1_record = to_record(arrays) if arrays is not None else None

    def sample(self, grid: Grid, server_round: int) -> list[int]:
        """Wait for enough sites, then sample a seeded fraction of them (sorted ids)."""
        nodes = wait_for_nodes(grid, self.min_available_sites)
        self.sites.learn(grid.get_nodes())
        size = max(self.min_sites, round(self.fraction_train * len(nodes)))
        rng = random.Random(self.seed * 100_003 + server_round)
        return sorted(rng.sample(nodes, min(size, len(nodes))))

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One train message per sampled site, with the rule's keys; ``stage1`` only for sites
        lacking it."""
        stage, reference = str(config["stage"]), from_record(arrays)
        self._expected = Expectation(
            fingerprint=str(config["fingerprint"]),
            stage=stage,
            server_round=server_round,
            reference=reference,
            max_update_norm=self.max_update_norm,
            max_num_examples=self.max_num_examples,
            fixed=frozenset(n for n in reference if LORA_A in n)
            if stage in self.frozen_a_stages
            else frozenset(),
        )
        config = ConfigRecord({**config, **self.rule.train_config()})
        return self._messages(grid, server_round, arrays, config, "train")

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One evaluate message per sampled site."""
        return self._messages(grid, server_round, arrays, config, "evaluate")

    def _messages(self, grid, server_round, arrays, config, message_type) -> list[Message]:
        self._log = RoundLog()
        self._round = (server_round, arrays, config, message_type)
        self._carried_stage1 = set()
        messages = [
            self._message(node, self.node_stage1.get(node) != self.stage1_hash)
            for node in self.sample(grid, server_round)
        ]
        self._sent = [message.metadata for message in messages]
        return messages

    def _message(self, node: int, with_stage1: bool) -> Message:
        """This round's message to ``node``; an ``instruct`` one announces the stage-1 hash and,
        ``with_stage1``, carries the adapter."""
        server_round, arrays, config, message_type = self._round
        content = RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(dict(config))})
        content[CONFIG]["server-round"] = server_round
        if self.stage1 is not None and config.get("stage") == "instruct":
            content[CONFIG]["stage1-hash"] = self.stage1_hash
            if with_stage1:
                content[STAGE1] = self._stage1_record
                self._carried_stage1.add(node)
        sent = sum(r.count_bytes() for r in content.array_records.values())
        self._log.sent[node] = self._log.sent.get(node, 0) + sent
        return Message(content=content, dst_node_id=node, message_type=message_type)

    def resend_stage1(self, reply: Message) -> Message | None:
        """The round's message again, now with the stage-1 adapter, when ``reply`` refuses for
        lacking it (new site, restarted, cache cleared) and the adapter was not sent; else
        ``None``. The refusal costs the site one extra exchange, in the same round."""
        node = self._site_of(reply)
        if (
            reply.has_error()
            or reply_status(reply) != (STATUS_REFUSED, Refusal.STAGE1_MISSING.value)
            or node in self._carried_stage1
            or self.stage1 is None
        ):
            return None
        log.info("%s lacks the stage-1 adapter: sending it", self.sites.describe(node))
        self.node_stage1[node] = ""
        message = self._message(node, with_stage1=True)
        self._sent.append(message.metadata)
        return message

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> RoundResult:
        """Validate each reply as it comes and hand the valid ones to the rule; raise
        :class:`TooFewReplies` when too few count, :class:`NonFiniteAggregate` when they
        combine into non-finite values."""
        expected, round_log = self._expected, self._log
        self.rule.begin(expected.reference)
        for reply in replies:
            try:
                admitted = self._admit(server_round, reply, expected, round_log)
                if admitted is not None:
                    self.rule.fold(*admitted)
            finally:
                _release(reply)
        named = round_log.named(self.sites.name)
        if len(named.sites) < self.min_sites:
            raise TooFewReplies(server_round, self.min_sites, named)
        result = self.rule.result()
        non_finite = first_non_finite(result)
        if non_finite is not None:
            raise NonFiniteAggregate(server_round, non_finite, named)
        metrics = MetricRecord({"train-loss": named.train_loss, "sites": float(len(named.sites))})
        return RoundResult(to_record(result), metrics, named)

    def _admit(
        self, server_round: int, reply: Message, expected: Expectation, round_log: RoundLog[int]
    ) -> tuple[dict[str, np.ndarray], float] | None:
        """A reply's arrays and weight when it counts, ``None`` when refused or rejected (each
        noted in the round log)."""
        node, status, reason = self._receive(reply, round_log)
        if status == "refused":
            round_log.refused[node] = reason
            log.warning("%s refused round %d: %s", self.sites.describe(node), server_round, reason)
            _note_privacy(node, reply, round_log)
            return None
        problem, arrays = (
            (reason or "error", None) if status != "ok" else check_train_reply(reply, expected)
        )
        if problem:
            self._reject(node, server_round, problem, round_log)
            return None
        metrics = reply.content[METRICS]
        weight, loss = float(metrics["num-examples"]), reported_number(metrics, "train-loss")
        round_log.examples[node] = weight
        if math.isfinite(loss):
            round_log.loss[node] = loss
        round_log.seconds[node] = reported_number(metrics, "seconds")
        _note_privacy(node, reply, round_log)
        return arrays, weight

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> RoundResult:
        """Average ``<task>/<lang>/<metric>`` over sites, weighted by each group's count; a
        reply with an unusable count is rejected with a logged reason."""
        round_log = self._log
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        for reply in replies:
            metrics = self._evaluation(server_round, reply, round_log)
            for key, score, weight in _weighted_scores(metrics):
                sums[key] = sums.get(key, 0.0) + score * weight
                weights[key] = weights.get(key, 0.0) + weight
        averaged = MetricRecord({key: sums[key] / weights[key] for key in sorted(sums)})
        return RoundResult(None, averaged if sums else None, round_log.named(self.sites.name))

    def _evaluation(
        self, server_round: int, reply: Message, round_log: RoundLog[int]
    ) -> Mapping[str, object]:
        """An evaluation reply's metrics when they may be averaged; empty for a refusal or an
        error, and for a reply whose group counts cannot be weights (each noted in the log)."""
        node, status, reason = self._receive(reply, round_log)
        if status == "refused":
            round_log.refused[node] = reason
            return {}
        if status != "ok":
            self._reject(node, server_round, reason or "error", round_log, "evaluation")
            return {}
        metrics = reply.content.metric_records.get(METRICS, {})
        problem = check_group_counts(metrics, self.max_num_examples)
        if problem:
            self._reject(node, server_round, problem, round_log, "evaluation")
            return {}
        round_log.examples[node] = reported_number(metrics, "num-examples")
        return metrics

    def _receive(self, reply: Message, round_log: RoundLog[int]) -> tuple[int, str, str]:
        """Note a reply's bytes, its site's name and stage-1 hash; ``(node, status, reason)``."""
        node = self._site_of(reply)
        round_log.received[node] = _bytes(reply)
        self.note_site(node, reply)
        return (node, *reply_status(reply))

    def note_site(self, node: int, reply: Message) -> None:
        """Take a reply's site name and the stage-1 hash it holds."""
        self.sites.note_reply(node, reply)
        if not reply.has_error() and META in reply.content:
            self.node_stage1[node] = str(reply.content[META].get("stage1-hash", ""))

    def _reject(
        self,
        node: int,
        server_round: int,
        problem: str,
        round_log: RoundLog[int],
        what: str = "reply",
    ) -> None:
        round_log.rejected[node] = problem
        log.warning(
            "rejected the %s of %s in round %d: %s",
            what,
            self.sites.describe(node),
            server_round,
            problem,
        )

    def _site_of(self, reply: Message) -> int:
        """The site a reply speaks for: its sender or, for the error the SuperLink answers in
        place of a site that went offline, the site the message was sent to."""
        sender = reply.metadata.src_node_id
        if sender != SUPERLINK_NODE_ID:
            return sender
        sent_to = {metadata.message_id: metadata.dst_node_id for metadata in self._sent}
        return sent_to.get(reply.metadata.reply_to_message_id, sender)


def wait_for_nodes(grid: Grid, minimum: int, poll_seconds: float = 1.0) -> list[int]:
    """Connected node ids once at least ``minimum`` are connected."""
    while len(nodes := sorted(grid.get_node_ids())) < minimum:
        log.info("waiting for sites: %d connected, %d needed", len(nodes), minimum)
        time.sleep(poll_seconds)
    return nodes


def _note_privacy(node: int, reply: Message, round_log: RoundLog[int]) -> None:
    """The cumulative epsilon and its delta a training reply reports, if any."""
    metrics = reply.content.metric_records.get(METRICS) if not reply.has_error() else None
    for key, spent in (("epsilon", round_log.epsilon), ("delta", round_log.delta)):
        if metrics is not None and key in metrics:
            spent[node] = reported_number(metrics, key)


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
