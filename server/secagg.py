"""One training round through Flower's SecAgg+ (run config ``aggregation = "secagg"``).

Flower 1.42 offers SecAgg+ as ``SecAggPlusWorkflow`` (server) and ``secaggplus_mod`` (site), built
for its legacy strategy API: the workflow asks a legacy ``Strategy`` for ``FitIns``, runs the
protocol's four steps on a ``Grid`` (keys, key shares, masked vectors, unmasking) and hands the
strategy's ``aggregate_fit`` the unmasked weighted mean only. FedUMIT uses both as they are
rather than re-implementing the protocol from ``flwr.common.secure_aggregation``'s primitives,
and adapts at the two seams:

* the server: :class:`_SumOnly`, a legacy ``Strategy`` that names the sampled sites and receives
  the unmasked mean; :class:`_Workflow` swaps the legacy ``FitIns`` content of the training step
  for FedUMIT's own training message (``arrays``, ``config``, ``stage1``, from
  :meth:`FedUmitStrategy.configure_train`), so a site runs the very round it runs under FedAvg;
* the site: :mod:`client.secure_aggregation` turns that round's result into the legacy reply
  SecAgg+ masks (the clipped update, weight 1).

What replaces per-reply validation, which needs each reply: each site clips its update's RMS to
``max-update-norm`` (and records it in its audit log), and SecAgg+'s quantiser clips every
coordinate to ``[-max-update-norm, max-update-norm]``; the server checks that the aggregate is
finite and that the mean update's RMS is within the bound (plus one quantisation step), and that
at least ``min-sites`` sites are in it. Sites' metrics and meta (epsilon, loss, seconds, name)
still arrive per site, in clear, as under FedAvg; no ``num-examples`` does.

The FedUMIT coordinator keeps everything else: the stage schedule, the round's record in
``metrics.jsonl``, checkpoints and resume, retries. A round SecAgg+ cannot complete (fewer sites
than the reconstruction threshold left after a step, too few key shares to unmask) raises
:class:`SecureAggregationFailed`: the global model and its checkpoint stay as they were.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import FitIns, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from protocol import META, METRICS, Refusal, from_record, secagg_refusal, to_record
from server.aggregation import first_non_finite, update_rms
from server.counting_grid import CountingGrid
from server.round_log import RoundLog, RoundResult
from server.strategy import FedUmitStrategy, NonFiniteAggregate, RoundFailed, TooFewReplies
from server.validation import reported_number

log = logging.getLogger(__name__)

# SecAgg+'s integer range for one site's quantised coordinate (Flower's default, 2**22) and
# for the masked sums (2**32): up to 1023 sites' sums fit.
QUANTIZATION_RANGE = 2**22
MODULUS_RANGE = 2**32


def quantization_step(clipping_range: float) -> float:
    """The width of one quantisation level of a coordinate in ``[-clipping_range,
    clipping_range]``: the most stochastic rounding moves one site's coordinate, and so the
    most it moves the mean of the sites' coordinates."""
    return 2 * clipping_range / QUANTIZATION_RANGE


class SecureAggregationFailed(RoundFailed):
    """SecAgg+ could not finish the round: too few sites stayed to unmask the sum."""


class _SumOnly(Strategy):
    """The legacy strategy ``SecAggPlusWorkflow`` drives: it names the round's sites and
    receives the unmasked mean of their updates; no site's own update ever reaches it."""

    def __init__(self, nodes: list[int], grid: Grid) -> None:
        self.nodes, self.grid = nodes, grid
        self.mean: list[np.ndarray] | None = None
        self.counted: list[int] = []

    def configure_fit(self, server_round, parameters, client_manager):
        """Every sampled site (the training content is FedUMIT's, set by :class:`_Workflow`;
        the workflow reads only each proxy's node id, never sends through it)."""
        fit = FitIns(parameters, {})
        return [(GridClientProxy(node, self.grid, 0), fit) for node in self.nodes]

    def aggregate_fit(self, server_round, results, failures):
        """Keep the unmasked mean (the same in every result) and which sites it covers."""
        self.counted = [proxy.node_id for proxy, _ in results]
        if results:
            self.mean = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}

    def initialize_parameters(self, client_manager):
        """Not used: the coordinator holds the global model."""
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        """Not used: evaluation runs through :class:`FedUmitStrategy`."""
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        """Not used."""
        return None, {}

    def evaluate(self, server_round, parameters):
        """Not used."""
        return None


class _Workflow(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, with FedUMIT's training message as the training step's
    content and the reason it stopped, when it did."""

    def __init__(self, contents: dict[int, RecordDict], **settings) -> None:
        super().__init__(**settings)
        self.contents = contents
        self.halted = ""

    def setup_stage(self, grid, context, state) -> bool:
        """Flower's setup, then FedUMIT's training content for each site."""
        going_on = super().setup_stage(grid, context, state)
        state.nid_to_fitins = dict(self.contents)
        return going_on

    def _check_threshold(self, state) -> bool:
        if super()._check_threshold(state):
            return True
        self.halted = (
            f"{len(state.active_node_ids)} of {len(state.sampled_node_ids)} sites remain, "
            f"and unmasking needs {state.threshold} (run config secagg-threshold)"
        )
        return False


class SecureRound:
    """Runs training rounds of ``strategy`` (whose rule is ``secagg``) through SecAgg+.

    ``reconstruction_threshold`` is the fraction of a round's sites whose key shares unmask the
    sum (at least 2): fewer sites colluding with the server learn nothing, and a round survives
    as long as that many stay.
    """

    def __init__(
        self, strategy: FedUmitStrategy, *, reconstruction_threshold: float, timeout: float
    ) -> None:
        if not strategy.max_update_norm > 0:
            raise ValueError("secure aggregation needs a positive max-update-norm")
        self.strategy, self.timeout = strategy, timeout
        self.reconstruction_threshold = reconstruction_threshold

    def run(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, config: ConfigRecord
    ) -> RoundResult:
        """One training round: the new global arrays, or :class:`RoundFailed`."""
        strategy, bound = self.strategy, self.strategy.max_update_norm
        config = ConfigRecord({**config, "max-update-norm": bound})
        messages = strategy.configure_train(server_round, arrays, config, grid)
        contents = {message.metadata.dst_node_id: message.content for message in messages}
        counting, legacy = CountingGrid(grid), _SumOnly(list(contents), grid)
        workflow = _Workflow(
            contents,
            num_shares=1.0,
            reconstruction_threshold=self.reconstruction_threshold,
            max_weight=1.0,
            clipping_range=bound,
            quantization_range=QUANTIZATION_RANGE,
            modulus_range=MODULUS_RANGE,
            timeout=self.timeout,
        )
        workflow(counting, _legacy_context(legacy, server_round))
        named = self._round_log(counting, legacy).named(strategy.sites.name)
        if legacy.mean is None:
            reason = workflow.halted or "too few key shares arrived to unmask the sum"
            raise SecureAggregationFailed(
                f"round {server_round}: secure aggregation stopped: {reason}", named
            )
        if len(legacy.counted) < strategy.min_sites:
            raise TooFewReplies(server_round, strategy.min_sites, named)
        reference = from_record(arrays)
        mean = OrderedDict(zip(reference, legacy.mean, strict=True))
        strategy.rule.begin(reference)
        strategy.rule.fold(mean, float(len(legacy.counted)))
        result = strategy.rule.result()
        non_finite = first_non_finite(result)
        if non_finite is not None:
            raise NonFiniteAggregate(server_round, non_finite, named)
        rms, allowed = update_rms(result, reference), bound + quantization_step(bound)
        if rms > allowed:
            raise RoundFailed(
                f"round {server_round}: the mean update's norm {rms:.4g} per coordinate (RMS) "
                f"exceeds the bound {bound:.4g} every site clips to; the global model is kept",
                named,
            )
        metrics = MetricRecord({"train-loss": named.train_loss, "sites": float(len(named.sites))})
        return RoundResult(to_record(result), metrics, named)

    def _round_log(self, counting: CountingGrid, legacy: _SumOnly) -> RoundLog[int]:
        """Per site: bytes of all four steps, and from its reply to the training step the
        numbers it reports; refusals and dropouts with their reason."""
        round_log = RoundLog[int](sent=dict(counting.sent), received=dict(counting.received))
        counted = set(legacy.counted)
        for reply in counting.replies:
            node = counting.site_of(reply)
            if reply.has_error():
                if _note_dropout(node, reply, round_log) is Refusal.STAGE1_MISSING:
                    self.strategy.node_stage1[node] = ""  # the next attempt carries it
                continue
            if META not in reply.content:
                continue  # a protocol step's reply: keys and shares only
            self.strategy.note_site(node, reply)
            metrics = reply.content.metric_records.get(METRICS, {})
            for key, values in (("epsilon", round_log.epsilon), ("delta", round_log.delta)):
                if key in metrics:
                    values[node] = reported_number(metrics, key)
            if node not in counted:
                continue
            round_log.examples[node] = 1.0  # every site weighs the same
            round_log.seconds[node] = reported_number(metrics, "seconds")
            loss = reported_number(metrics, "train-loss")
            if np.isfinite(loss):
                round_log.loss[node] = loss
        for node in set(round_log.sent) - counted - set(round_log.refused):
            round_log.rejected.setdefault(node, "dropped out of secure aggregation")
        return round_log


def _note_dropout(node: int, reply: Message, round_log: RoundLog[int]) -> Refusal | None:
    """A site's error reply: its refusal code when it refused (returned), else a dropout
    (Flower's error code in the record; the first line of the error's text in the log)."""
    refusal = secagg_refusal(reply.error.reason)
    if refusal is not None:
        round_log.refused[node] = refusal.value
        return refusal
    round_log.rejected[node] = f"dropped out of secure aggregation (error code {reply.error.code})"
    first_line = next(iter(reply.error.reason.strip().splitlines()), "")
    log.warning("node %d dropped out of secure aggregation: %s", node, first_line[:200])
    return None


def _legacy_context(strategy: _SumOnly, server_round: int) -> LegacyContext:
    """The legacy context SecAgg+ reads its round from (the global arrays travel in FedUMIT's
    own training content instead)."""
    state = RecordDict(
        {
            MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round}),
            MAIN_PARAMS_RECORD: ArrayRecord(),
        }
    )
    context = Context(run_id=0, node_id=0, node_config={}, state=state, run_config={})
    return LegacyContext(context, strategy=strategy, client_manager=SimpleClientManager())
