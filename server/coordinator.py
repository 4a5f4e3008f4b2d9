"""The two-stage schedule: ``align`` rounds, freeze and hand over, then ``instruct`` rounds.

After every round the round's record (:func:`round_record`, from the logs the strategy
returns) is appended to ``metrics.jsonl``, the plots redrawn and then the global adapter
checkpointed; federated evaluation runs at round 0 and every ``eval-every`` rounds. Under
``aggregation = "secagg"`` a training round runs through Flower's SecAgg+
(:mod:`server.secagg`). A run resumes from its last complete round; the server's own state
(global arrays, the strategy's ``state_dict``: FedAdam's moments) is checkpointed, and records
after the last checkpoint are dropped. The server sends no seed: a site draws its sampling and
noise from the operating system, unless its own config opts in to replayable randomness
(simulations do), and then a resumed run ends bitwise where an uninterrupted one ends.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from protocol import Refusal, arrays_sha256, from_record, to_record
from server.checkpoints import Checkpoint, latest_checkpoint, save_checkpoint
from server.config import RunConfig, StageSchedule
from server.plots import draw_run_plots
from server.round_log import RoundLog, RoundResult
from server.rounds import stream_replies
from server.rules import build_rule
from server.run_folder import RunFolder
from server.secagg import SecureRound
from server.strategy import FedUmitStrategy, RoundFailed
from shared_model.loading import stage_model
from shared_model.spec import STAGES, ModelSpec

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """Final global arrays per stage and whether every planned round completed."""

    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    completed: bool = True
    stopped_reason: str = ""
    skipped: list[str] = field(default_factory=list)


class StageSkipped(RuntimeError):
    """No site holds usable training records of a stage: the run goes on without it."""

    def __init__(self, stage: str, server_round: int) -> None:
        self.stage, self.server_round = stage, server_round
        super().__init__(
            f"stage {stage!r} skipped: no site holds usable {stage} training records "
            f"(every site answered {Refusal.NO_RECORDS.value!r} in round {server_round}); "
            + (
                "the next stage starts from the base as it is"
                if stage == "align"
                else "nothing of it is trained or exported"
            )
        )


def initial_arrays(
    spec: ModelSpec, stage: str, seed: int, align: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """Seeded fresh adapter of ``stage`` (``instruct`` over the base with ``align`` merged)."""
    torch.manual_seed(seed)
    adapter, _ = stage_model(spec, stage, align_arrays=align)
    return dict(adapter.arrays())


class Coordinator:
    """Runs a consortium's stages on a Flower Grid."""

    def __init__(self, config: RunConfig, spec: ModelSpec, folder: RunFolder) -> None:
        self.config, self.spec, self.folder = config, spec, folder
        self.fingerprint = spec.fingerprint()
        self.strategy = FedUmitStrategy(
            build_rule(config),
            fraction_train=config.fraction_train,
            min_sites=config.min_sites,
            min_available_sites=config.min_available_sites,
            max_update_norm=config.max_update_norm,
            max_num_examples=config.max_num_examples,
            seed=config.seed,
            frozen_a_stages=frozenset(s for s in STAGES if spec.stage(s).frozen_a),
        )
        self.secure = (
            SecureRound(
                self.strategy,
                reconstruction_threshold=config.secagg_threshold,
                timeout=config.round_timeout,
            )
            if self.strategy.rule.sums_only
            else None
        )

    def run(self, grid: Grid, stage1: dict[str, np.ndarray] | None = None) -> RunOutcome:
        """Every planned stage and round, resuming after the last checkpoint in the folder."""
        outcome = RunOutcome()
        self.strategy.summary()
        self._forget_unfinished_rounds()
        if stage1 is not None:
            outcome.arrays["align"] = stage1
        stages = self.config.stages
        for position, schedule in enumerate(stages):
            later_rounds = sum(s.rounds for s in stages[position + 1 :])
            align = outcome.arrays.get("align")
            self.strategy.set_stage1(align, arrays_sha256(align) if align else "")
            try:
                arrays = self._run_stage(grid, schedule, align, later_rounds, outcome)
            except StageSkipped as skipped:
                log.warning("%s", skipped)
                self._record(schedule.name, skipped.server_round, {"skipped": str(skipped)})
                outcome.skipped.append(schedule.name)
                continue
            if arrays is None:
                return outcome
            outcome.arrays[schedule.name] = arrays
        return outcome

    def _run_stage(self, grid, schedule: StageSchedule, align, later_rounds, outcome):
        resumed = latest_checkpoint(self.folder.checkpoints, schedule.name, self.fingerprint)
        if resumed is not None:
            arrays, start = resumed.arrays, resumed.server_round + 1
            self.strategy.load_state_dict(resumed.strategy_state)
            log.info("%s: resuming after round %d", schedule.name, resumed.server_round)
        else:
            arrays, start = initial_arrays(self.spec, schedule.name, self.config.seed, align), 1
            self.strategy.load_state_dict({})
            evaluated = (
                self._evaluate(grid, schedule, 0, arrays) if self.config.eval_at_start else None
            )
            self._record(schedule.name, 0, round_record(None, evaluated))
        for server_round in range(start, schedule.rounds + 1):
            began = time.perf_counter()
            rounds_left = schedule.rounds - server_round + 1 + later_rounds
            try:
                arrays, trained = self._train(grid, schedule, server_round, arrays, rounds_left)
            except RoundFailed as error:
                if server_round == 1 and _no_site_can_train(error.log):
                    raise StageSkipped(schedule.name, server_round) from error
                log.error(
                    "stopping: %s; the last good checkpoint stays in %s",
                    error,
                    self.folder.checkpoints,
                )
                outcome.completed, outcome.stopped_reason = False, str(error)
                self._record(schedule.name, server_round, {"failed": str(error)})
                return None
            evaluate = self.config.eval_every and server_round % self.config.eval_every == 0
            if evaluate or server_round == schedule.rounds:
                evaluated = self._evaluate(grid, schedule, server_round, arrays)
            else:
                evaluated = None
            record = round_record(trained, evaluated)
            self._record(
                schedule.name, server_round, {**record, "seconds": time.perf_counter() - began}
            )
            self._checkpoint(schedule.name, server_round, arrays)
        return arrays

    def _forget_unfinished_rounds(self) -> None:
        """Drop the records of rounds after the last checkpoint (a killed run's last words):
        a resumed run runs and records those rounds again, so each round has one record."""
        names = [schedule.name for schedule in self.config.stages]
        last = ("", 0)
        for name in names:
            checkpoint = latest_checkpoint(self.folder.checkpoints, name, self.fingerprint)
            if checkpoint is not None:
                last = (name, checkpoint.server_round)
        self.folder.truncate_metrics_after(*last, names)

    def _train(self, grid, schedule, server_round, arrays, rounds_left):
        config = self._round_config(schedule, server_round, rounds_left)
        for attempt in range(self.config.retries + 1):
            try:
                result = self._train_once(grid, server_round, arrays, config)
                return from_record(result.arrays), result.log
            except RoundFailed as error:
                if attempt == self.config.retries or (
                    server_round == 1 and _no_site_can_train(error.log)
                ):
                    raise
                log.warning(
                    "%s; retrying round %d (%d left)",
                    error,
                    server_round,
                    self.config.retries - attempt,
                )
        raise AssertionError("unreachable")

    def _train_once(self, grid, server_round, arrays, config) -> RoundResult:
        """One attempt at a training round; through SecAgg+ when the rule sees only sums."""
        if self.secure is not None:
            return self.secure.run(grid, server_round, to_record(arrays), config)
        messages = self.strategy.configure_train(server_round, to_record(arrays), config, grid)
        return self.strategy.aggregate_train(server_round, self._replies(grid, messages))

    def _evaluate(self, grid, schedule, server_round, arrays) -> RoundResult:
        config = ConfigRecord(
            {
                "stage": schedule.name,
                "fingerprint": self.fingerprint,
                "split": "val",
                "run-id": self.folder.run_id,
            }
        )
        messages = self.strategy.configure_evaluate(server_round, to_record(arrays), config, grid)
        replies = self._replies(grid, messages)
        result = self.strategy.aggregate_evaluate(server_round, replies)
        for key, value in sorted((result.metrics or {}).items()):
            log.info("%s round %d  %-40s %.3f", schedule.name, server_round, key, value)
        return result

    def _replies(self, grid: Grid, messages):
        """The round's replies as they come; a site lacking the stage-1 adapter gets it."""
        return stream_replies(
            grid, messages, self.config.round_timeout, resend=self.strategy.resend_stage1
        )

    def _round_config(self, schedule: StageSchedule, server_round: int, rounds_left: int):
        config = self.config
        return ConfigRecord(
            {
                "stage": schedule.name,
                "fingerprint": self.fingerprint,
                "run-id": self.folder.run_id,
                "lr": schedule.lr_at(server_round),
                "local-steps": schedule.local_steps,
                "local-epochs": schedule.local_epochs,
                "batch-size": schedule.batch_size,
                "dp": config.dp,
                "noise-multiplier": config.noise_multiplier,
                "max-grad-norm": config.max_grad_norm,
                "physical-batch-size": config.physical_batch_size,
                "rounds-left": rounds_left,
            }
        )

    def _checkpoint(self, stage: str, server_round: int, arrays) -> None:
        state = self.strategy.state_dict()
        save_checkpoint(
            self.folder.checkpoints,
            Checkpoint(stage, server_round, self.fingerprint, self.folder.run_id, arrays, state),
        )

    def _record(self, stage: str, server_round: int, record: dict[str, Any]) -> None:
        self.folder.append_metrics({"stage": stage, "round": server_round, **record})
        draw_run_plots(self.folder.metrics(), self.folder.plots)


def round_record(trained: RoundLog[str] | None, evaluated: RoundResult | None) -> dict[str, Any]:
    """A round's line in ``metrics.jsonl``, every site by name: the training log's sites,
    ``rejected`` (why), ``refused`` (codes), ``epsilon`` and ``delta``, ``site_seconds`` and
    mean ``train_loss``; the evaluation's average (``eval``) and its ``eval_sites``,
    ``eval_rejected`` and ``eval_refused``; and ``bytes_sent`` / ``bytes_received`` per
    site, for ``train`` and ``evaluate`` apart."""
    record: dict[str, Any] = {"eval": {}}
    sent: dict[str, dict[str, int]] = {}
    received: dict[str, dict[str, int]] = {}
    if trained is not None:
        record.update(
            train_loss=trained.train_loss,
            sites=trained.sites,
            rejected=trained.rejected,
            refused=trained.refused,
            epsilon=trained.epsilon,
            delta=trained.delta,
            site_seconds=trained.seconds,
        )
        sent["train"], received["train"] = trained.sent, trained.received
    if evaluated is not None:
        record.update(
            eval=dict(evaluated.metrics or {}),
            eval_sites=evaluated.log.sites,
            eval_rejected=evaluated.log.rejected,
            eval_refused=evaluated.log.refused,
        )
        sent["evaluate"], received["evaluate"] = evaluated.log.sent, evaluated.log.received
    if sent:
        record.update(bytes_sent=sent, bytes_received=received)
    return record


def _no_site_can_train(round_log: RoundLog[str]) -> bool:
    """True when every site answered the round, and every one with no records."""
    return (
        not round_log.sites
        and not round_log.rejected
        and bool(round_log.refused)
        and all(reason == Refusal.NO_RECORDS.value for reason in round_log.refused.values())
    )
