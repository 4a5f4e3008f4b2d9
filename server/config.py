"""The coordinator's run config: Flower's flat ``run_config`` as validated dataclasses.

Defaults live in ``pyproject.toml`` (``[tool.flwr.app.config]``, per-stage tables flattened by
Flower to ``align.rounds`` ...); ``flwr run --run-config`` or ``fedumit launch --run-config``
override them. Every error names the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from server.rules import RULES

# Default of the run config's ``max-update-norm``: the most a reply may move the adapter, as the
# root-mean-square per coordinate of ``reply - global`` (its L2 norm over sqrt(coordinates)), so
# that one bound fits the tiny base (0.4-0.7 M coordinates) and Qwen2-VL-2B (45-53 M) alike: a
# plain L2 bound tuned on the one rejects honest updates of the other. AdamW moves each
# coordinate by about ``lr`` per step whatever the adapter's size; under DP noise the steps
# random-walk, so a round moves a LoRA coordinate by about ``lr x sqrt(steps)``. Measured on the
# tiny base, one round of one site: `fedumit simulate` (DP) align 0.0013, instruct 0.021 (LoRA
# matrices 0.034; lr 4e-3 x 60 steps), and without DP at the sites' default learning-rate cap
# 1e-2: align 0.024 and instruct 0.037 after 60 steps, instruct 0.048 after 200 (largest
# coordinate 0.61). A bound of 1.0 is twenty times the largest of these (at lr 1e-2 an honest
# DP round would need some 10 000 local steps to reach it) and thirty times the size of the
# adapter itself (its trained entries have an RMS of about 0.03): a reply that moves every
# coordinate further is not a training update. Coordinators who train far longer raise it; 0
# turns it off.
DEFAULT_MAX_UPDATE_NORM = 1.0

# Default of the run config's ``max-num-examples``, the most training examples one reply may
# claim (``num-examples`` weighs a reply in FedAvg, so an unbounded claim takes over the global
# model). Ten million is more annotated records than one hospital's archive holds (MIMIC-CXR,
# among the largest single-institution image-report sets, has 377 k images), and the round's
# total weight stays an exact integer in float64 for up to 900 million sites.
DEFAULT_MAX_NUM_EXAMPLES = 10_000_000

# The defaults of [tool.flwr.app.config] in pyproject.toml (Flower reads those; this copy
# serves runs started from Python, and a test keeps the two equal).
RUN_DEFAULTS: dict[str, Any] = {
    "model-spec": "",
    "run-dir": "runs",
    "run-id": "",
    "resume": "",
    "launch-id": "",
    "seed": 0,
    "aggregation": "fedavg",
    "proximal-mu": 0.0,
    "max-update-norm": DEFAULT_MAX_UPDATE_NORM,
    "max-num-examples": DEFAULT_MAX_NUM_EXAMPLES,
    "trim-fraction": 0.1,
    "secagg-threshold": 0.6,
    "server-lr": 0.01,
    "fraction-train": 1.0,
    "min-sites": 2,
    "min-available-sites": 2,
    "round-timeout": 1800.0,
    "eval-every": 1,
    "eval-at-start": True,
    "retries": 1,
    "dp": True,
    "noise-multiplier": 0.0,
    "max-grad-norm": 1.0,
    "physical-batch-size": 16,
    "stage1-adapter": "",
    "stop-after-align": False,
    "export-average-rounds": 1,
    "simulation-sites": "",
    "align.rounds": 3,
    "align.local-steps": 20,
    "align.local-epochs": 0.0,
    "align.lr": 0.001,
    "align.lr-decay": 1.0,
    "align.batch-size": 8,
    "instruct.rounds": 4,
    "instruct.local-steps": 30,
    "instruct.local-epochs": 0.0,
    "instruct.lr": 0.002,
    "instruct.lr-decay": 0.9,
    "instruct.batch-size": 8,
}


class RunConfigError(ValueError):
    """A run-config key is missing or holds an impossible value."""

    def __init__(self, key: str, reason: str) -> None:
        self.key, self.reason = key, reason
        super().__init__(f"run config [{key}]: {reason}")


@dataclass(frozen=True)
class StageSchedule:
    """Rounds and local training of one stage.

    ``local_epochs`` (when > 0) wins over ``local_steps``; the learning rate of round ``r``
    (1-based) is ``lr * lr_decay ** (r - 1)``.
    """

    name: str
    rounds: int
    local_steps: int
    local_epochs: float
    lr: float
    lr_decay: float
    batch_size: int

    def lr_at(self, server_round: int) -> float:
        """Learning rate sent to sites in ``server_round``."""
        return self.lr * self.lr_decay ** (server_round - 1)


@dataclass(frozen=True)
class RunConfig:
    """Everything the ServerApp reads from the run config."""

    model_spec: str
    run_dir: str
    run_id: str
    resume: str
    launch_id: str
    seed: int
    aggregation: str
    proximal_mu: float
    max_update_norm: float
    max_num_examples: int
    trim_fraction: float
    secagg_threshold: float
    server_lr: float
    fraction_train: float
    min_sites: int
    min_available_sites: int
    round_timeout: float
    eval_every: int
    eval_at_start: bool
    retries: int
    dp: bool
    noise_multiplier: float
    max_grad_norm: float
    physical_batch_size: int
    stage1_adapter: str
    stop_after_align: bool
    export_average_rounds: int
    align: StageSchedule
    instruct: StageSchedule

    @property
    def stages(self) -> list[StageSchedule]:
        """Stages to run, in order (``align`` is skipped when a stage-1 adapter is given)."""
        stages = [] if self.stage1_adapter else [self.align]
        if not self.stop_after_align:
            stages.append(self.instruct)
        return [s for s in stages if s.rounds > 0]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for the run folder's resolved config)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_dict` (a run folder's saved config); a key added since the
        folder was written takes its default."""
        data = {**cls.from_flat(RUN_DEFAULTS).to_dict(), **data}
        stages = {name: StageSchedule(**data[name]) for name in ("align", "instruct")}
        return cls(**{**data, **stages})

    def resuming(self) -> RunConfig:
        """The config a resumed run goes on with: the one its folder saved when it started, so
        a resumed run follows the same schedule, seeds and privacy settings whatever the new
        launch passed (only ``resume`` and ``launch-id`` are taken from it)."""
        from server.run_folder import RunFolder

        saved = RunFolder(Path(self.resume)).config()["run"]
        return replace(RunConfig.from_dict(saved), resume=self.resume, launch_id=self.launch_id)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> RunConfig:
        """Validate Flower's flat run config."""
        read = _Reader(flat)
        config = cls(
            model_spec=read.get("model-spec", str),
            run_dir=read.get("run-dir", str),
            run_id=read.get("run-id", str),
            resume=read.get("resume", str),
            launch_id=read.get("launch-id", str),
            seed=read.get("seed", int),
            aggregation=read.choice("aggregation", tuple(RULES)),
            proximal_mu=read.number("proximal-mu", minimum=0.0),
            max_update_norm=read.number("max-update-norm", minimum=0.0),
            max_num_examples=read.integer("max-num-examples", minimum=1),
            trim_fraction=read.number("trim-fraction", minimum=0.0, maximum=0.49),
            secagg_threshold=read.number("secagg-threshold", minimum=0.01, maximum=1.0),
            server_lr=read.number("server-lr", minimum=0.0),
            fraction_train=read.number("fraction-train", minimum=0.0, maximum=1.0),
            min_sites=read.integer("min-sites", minimum=1),
            min_available_sites=read.integer("min-available-sites", minimum=1),
            round_timeout=read.number("round-timeout", minimum=1.0),
            eval_every=read.integer("eval-every", minimum=0),
            eval_at_start=read.get("eval-at-start", bool),
            retries=read.integer("retries", minimum=0),
            dp=read.get("dp", bool),
            noise_multiplier=read.number("noise-multiplier", minimum=0.0),
            max_grad_norm=read.number("max-grad-norm", minimum=1e-9),
            physical_batch_size=read.integer("physical-batch-size", minimum=1),
            stage1_adapter=read.get("stage1-adapter", str),
            stop_after_align=read.get("stop-after-align", bool),
            export_average_rounds=read.integer("export-average-rounds", minimum=1),
            align=_stage(read, "align"),
            instruct=_stage(read, "instruct"),
        )
        if config.stop_after_align and config.stage1_adapter:
            raise RunConfigError("stop-after-align", "nothing to run with a given stage1-adapter")
        if config.aggregation == "secagg":
            _check_secure_aggregation(config)
        return config


def _check_secure_aggregation(config: RunConfig) -> None:
    """Secure aggregation needs a bound each site clips to (it replaces the server's per-reply
    check) and at least two sites in a round (a sum of one is that site's update)."""
    if not config.max_update_norm > 0:
        raise RunConfigError(
            "max-update-norm", "aggregation 'secagg' needs a positive bound (sites clip to it)"
        )
    if config.min_sites < 2:
        raise RunConfigError(
            "min-sites", "aggregation 'secagg' needs at least 2: a sum of one is that site's update"
        )


def _stage(read: _Reader, name: str) -> StageSchedule:
    return StageSchedule(
        name=name,
        rounds=read.integer(f"{name}.rounds", minimum=0),
        local_steps=read.integer(f"{name}.local-steps", minimum=1),
        local_epochs=read.number(f"{name}.local-epochs", minimum=0.0),
        lr=read.number(f"{name}.lr", minimum=1e-12),
        lr_decay=read.number(f"{name}.lr-decay", minimum=1e-6, maximum=1.0),
        batch_size=read.integer(f"{name}.batch-size", minimum=1),
    )


class _Reader:
    def __init__(self, flat: Mapping[str, Any]) -> None:
        self.flat = flat

    def get(self, key: str, kind: type) -> Any:
        if key not in self.flat:
            raise RunConfigError(key, "missing (add it to [tool.flwr.app.config])")
        value = self.flat[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise RunConfigError(key, f"expected {kind.__name__}, got {value!r}")
        return value

    def number(self, key: str, minimum: float, maximum: float | None = None) -> float:
        value = self.get(key, float)
        if value < minimum or (maximum is not None and value > maximum):
            raise RunConfigError(key, f"{value} is outside [{minimum}, {maximum or 'inf'}]")
        return value

    def integer(self, key: str, minimum: int) -> int:
        value = self.get(key, int)
        if value < minimum:
            raise RunConfigError(key, f"{value} is below {minimum}")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.get(key, str)
        if value not in choices:
            raise RunConfigError(key, f"{value!r} is not one of {list(choices)}")
        return value
