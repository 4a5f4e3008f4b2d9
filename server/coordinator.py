"""The two-stage schedule: ``align`` rounds, freeze and hand over, then ``instruct`` rounds.

After every round the round's record is appended to ``metrics.jsonl``, the plots redrawn and
then the global adapter checkpointed; federated evaluation runs at round 0 and every
``eval-every`` rounds. A run resumes from its last complete round; the server's own state (global
arrays, the server optimiser's moments) is checkpointed, and records after the last checkpoint are
dropped. The server sends no seed: a site draws its sampling and noise from the operating system,
unless its own config opts in to replayable randomness (simulations do), and then a resumed run
ends bitwise where an uninterrupted one ends.
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

from protocol import Refusal, arrays_hash, from_record, to_record
from server.checkpoints import Checkpoint, latest_checkpoint, save_checkpoint
from server.config import RunConfig, StageSchedule
from server.plots import draw_run_plots
from server.rounds import stream_replies
from server.run_folder import RunFolder
from server.strategy import FedUmitStrategy, RoundFailed
from shared_model.loading import stage_model
from shared_model.spec import ModelSpec

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
            aggregation=config.aggregation,
            fraction_train=config.fraction_train,
            min_sites=config.min_sites,
            min_available_sites=config.min_available_sites,
            max_update_norm=config.max_update_norm,
            max_num_examples=config.max_num_examples,
            trim_fraction=config.trim_fraction,
            server_lr=config.server_lr,
            seed=config.seed,
        )

    def run(self, grid: Grid, stage1: dict[str, np.ndarray] | None = None) -> RunOutcome:
        """Every planned stage and round, resuming after the last checkpoint in the folder."""
        outcome = RunOutcome()
        self._forget_unfinished_rounds()
        if stage1 is not None:
            outcome.arrays["align"] = stage1
        stages = self.config.stages
        for position, schedule in enumerate(stages):
            later_rounds = sum(s.rounds for s in stages[position + 1 :])
            align = outcome.arrays.get("align")
            self.strategy.set_stage1(align, arrays_hash(align) if align else "")
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
            if self.strategy.optimizer is not None:
                self.strategy.optimizer.load_state(resumed.optimizer)
            log.info("%s: resuming after round %d", schedule.name, resumed.server_round)
        else:
            arrays, start = initial_arrays(self.spec, schedule.name, self.config.seed, align), 1
            if self.strategy.optimizer is not None:
                self.strategy.optimizer.load_state({})
            start_metrics = (
                self._evaluate(grid, schedule, 0, arrays) if self.config.eval_at_start else {}
            )
            self._record(schedule.name, 0, {"eval": start_metrics})
        for server_round in range(start, schedule.rounds + 1):
            began = time.perf_counter()
            rounds_left = schedule.rounds - server_round + 1 + later_rounds
            try:
                arrays = self._train(grid, schedule, server_round, arrays, rounds_left)
            except RoundFailed as error:
                if server_round == 1 and self._no_site_can_train():
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
                metrics = self._evaluate(grid, schedule, server_round, arrays)
            else:
                metrics = {}
            self._record(schedule.name, server_round, self._train_record(metrics, began))
            self._checkpoint(schedule.name, server_round, arrays)
        return arrays

    def _no_site_can_train(self) -> bool:
        """True when every site answered the last round, and every one with no records."""
        log_ = self.strategy.round_log
        return (
            not log_.sites
            and not log_.rejected
            and bool(log_.refused)
            and all(reason == Refusal.NO_RECORDS.value for reason in log_.refused.values())
        )

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
            messages = self.strategy.configure_train(server_round, to_record(arrays), config, grid)
            replies = stream_replies(grid, messages, self.config.round_timeout)
            try:
                aggregated, _ = self.strategy.aggregate_train(server_round, replies)
                return from_record(aggregated)
            except RoundFailed as error:
                if attempt == self.config.retries or (
                    server_round == 1 and self._no_site_can_train()
                ):
                    raise
                log.warning(
                    "%s; retrying round %d (%d left)",
                    error,
                    server_round,
                    self.config.retries - attempt,
                )
        raise AssertionError("unreachable")

    def _evaluate(self, grid, schedule, server_round, arrays) -> dict[str, float]:
        config = ConfigRecord(
            {
                "stage": schedule.name,
                "fingerprint": self.fingerprint,
                "split": "val",
                "run-id": self.folder.run_id,
            }
        )
        messages = self.strategy.configure_evaluate(server_round, to_record(arrays), config, grid)
        replies = stream_replies(grid, messages, self.config.round_timeout)
        metrics = self.strategy.aggregate_evaluate(server_round, replies)
        result = dict(metrics) if metrics is not None else {}
        for key, value in sorted(result.items()):
            log.info("%s round %d  %-40s %.3f", schedule.name, server_round, key, value)
        return result

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
                "proximal-mu": config.proximal_mu if config.aggregation == "fedprox" else 0.0,
                "rounds-left": rounds_left,
            }
        )

    def _checkpoint(self, stage: str, server_round: int, arrays) -> None:
        optimizer = self.strategy.optimizer.state() if self.strategy.optimizer else {}
        save_checkpoint(
            self.folder.checkpoints,
            Checkpoint(
                stage, server_round, self.fingerprint, self.folder.run_id, arrays, optimizer
            ),
        )

    def _train_record(self, metrics: dict[str, float], began: float) -> dict[str, Any]:
        round_log = self.strategy.round_log
        return {
            "train_loss": round_log.train_loss,
            "sites": [str(n) for n in round_log.sites],
            "rejected": {str(n): r for n, r in round_log.rejected.items()},
            "refused": {str(n): r for n, r in round_log.refused.items()},
            "epsilon": {str(n): e for n, e in round_log.epsilon.items()},
            "site_seconds": {str(n): t for n, t in round_log.train_seconds.items()},
            "bytes_sent": round_log.bytes_sent,
            "bytes_received": round_log.bytes_received,
            "seconds": time.perf_counter() - began,
            "eval": metrics,
        }

    def _record(self, stage: str, server_round: int, record: dict[str, Any]) -> None:
        self.folder.append_metrics({"stage": stage, "round": server_round, **record})
        draw_run_plots(self.folder.metrics(), self.folder.plots)
