"""Site configuration: one hospital's TOML file as a frozen, validated dataclass.

Relative paths resolve against the folder of the TOML file. Every error names the file and the
key, so hospital IT can fix it without reading code.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from client.stage1 import DERIVE_MODES
from shared_model.tasks import TASK_NAMES

STAGES = ("align", "instruct")
PRIVACY_UNITS = ("patient", "record")
EVALUATION_SPLITS = ("val", "test")  # never "train": scores on training data read it out
CT_WINDOWS = {
    # name: (centre, width) in Hounsfield units
    "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "abdomen": (60.0, 400.0),
}


class SiteConfigError(ValueError):
    """A site config file is missing, malformed, or holds a value out of range."""

    def __init__(self, path: Path, key: str, reason: str) -> None:
        self.path, self.key, self.reason = path, key, reason
        super().__init__(f"{path}: [{key}] {reason}")


@dataclass(frozen=True)
class ImagingConfig:
    """How the site's images are turned into pixels.

    Parameters
    ----------
    ct_window:
        Default VOI window for CT without a usable window in the file: a name from
        ``CT_WINDOWS`` or ``(centre, width)`` in HU.
    prefer_file_window:
        Use the DICOM file's own Window Center/Width or VOI LUT when present.
    nifti_volume_index:
        Which volume of a 4D NIfTI to use.
    intensity_percentiles:
        Percentile range mapped to 0-255 for images with no window (MR, NIfTI without HU).
    max_pixels:
        Most pixels one 2D image, frame or slice may declare in its header (DICOM Rows x
        Columns, NIfTI in-plane dims, PNG/JPEG size); a larger one is refused before it is
        decoded. 100 million is four times a full-field mammogram (about 24 MP) and well above
        a film digitised at 50 um (about 60 MP), so real images never reach it.
    max_voxels:
        Most voxels one volume may declare (a series' slices, a multi-frame DICOM's frames,
        every volume of a NIfTI file) before it is decoded. 2 billion holds a 1024 x 1024
        photon-counting CT of 1900 slices, four times a 512 x 512 whole-body CT of 2000 slices.
    """

    ct_window: tuple[float, float] = CT_WINDOWS["soft-tissue"]
    prefer_file_window: bool = True
    nifti_volume_index: int = 0
    intensity_percentiles: tuple[float, float] = (0.5, 99.5)
    max_pixels: int = 100_000_000
    max_voxels: int = 2_000_000_000


@dataclass(frozen=True)
class Policy:
    """What the site agrees to do and to disclose, whatever the coordinator asks.

    The trainer clamps or refuses a server request beyond these limits and says which; no
    message can raise them.

    Parameters
    ----------
    eval_splits:
        Splits the server may have the site evaluate on (``val``, ``test``; never ``train``).
    min_group_size:
        Evaluation scores of a task and language with fewer records are withheld: a group of
        one record would read that record out.
    score_decimals:
        Evaluation scores are rounded to this many decimals.
    max_evaluations_per_run, max_evaluations:
        Evaluations the site answers per run, and over its lifetime (its audit log counts
        them): evaluation is not covered by DP, so how often it can be asked is bounded.
    max_eval_records:
        Most records of a split one evaluation scores (0: every one). The site keeps the same
        fixed subset at every evaluation, the records whose ids hash lowest
        (:func:`client.disclosure.evaluation_subset`), so an evaluation's cost stays bounded as
        the archive grows and no request can choose which records are scored.
    send_train_loss:
        Whether training replies carry the mean training loss (not covered by DP).
    count_rounding:
        ``num-examples`` and per-group counts are rounded to a multiple of this.
    replayable_noise_seed:
        Simulations only: key the round's sampling and noise from this site-local seed, so runs
        can be repeated. Anyone who knows it can remove the noise; ``None`` (the default) draws
        them from the operating system.
    derive_stage1:
        Where stage 1 (``align``) finds image-text pairs: ``when-missing`` (default) derives
        captions from the site's other records (reports, class names, answers) for a split with
        no ``caption`` or ``compare`` record; ``always`` adds them beside the archive's own;
        ``never`` uses the archive's only (see :mod:`client.stage1`).
    balance_answers:
        In ``instruct`` DP rounds, weigh each closed question's answer classes the same
        (:mod:`client.privacy.answer_prior`): the site first releases its closed answers'
        counts under DP, once a run, from its own budget (its ledger records the release),
        and keeps them beside the ledger; they never leave the site.
    answer_count_noise:
        The standard deviation of the Gaussian noise on those counts (the mechanism's noise
        multiplier: each unit moves them by at most 1 in L2 norm). At 5, epsilon 8 over a run
        raises the rounds' sigma by under 1 %.
    """

    stages: tuple[str, ...] = STAGES
    tasks: tuple[str, ...] = TASK_NAMES
    privacy_unit: str = "patient"
    max_epsilon: float = 8.0
    delta: float = 1e-5
    max_local_epochs: float = 2.0
    max_batch_size: int = 64
    max_learning_rate: float = 1e-2
    require_dp: bool = True
    eval_splits: tuple[str, ...] = ("val",)
    min_group_size: int = 20
    score_decimals: int = 2
    max_evaluations_per_run: int = 20
    max_evaluations: int = 500
    max_eval_records: int = 0
    send_train_loss: bool = False
    count_rounding: int = 10
    replayable_noise_seed: int | None = None
    derive_stage1: str = "when-missing"
    balance_answers: bool = False
    answer_count_noise: float = 5.0


@dataclass(frozen=True)
class SubspaceConfig:
    """DP-SGD in a gradient subspace found on public records (:mod:`client.privacy.subspace`).

    Before each DP round the site computes the gradients of up to ``records`` records of
    ``public_archive`` at the round's global adapter and keeps their ``directions`` leading
    directions, ``by_task`` an equal share for each task; the round's clipping and noise then
    act on those coordinates only, so the noise grows with ``directions`` instead of the
    adapter's size. The public archive must hold only records anyone may see (a public
    dataset in the manifest format): its records decide the directions and are never covered
    by the site's budget. The privacy guarantee of the site's own records is the same.

    Parameters
    ----------
    public_archive:
        An archive of public records, in the site archive's format.
    directions:
        ``k``, the number of directions; the noise on a step's sum has norm ``sigma C sqrt(k)``.
    records:
        Most public records whose gradients are computed each round (at least ``directions``).
    by_task:
        Give each task of the public records an equal share of the directions.
    """

    public_archive: Path
    directions: int = 128
    records: int = 256
    by_task: bool = True


@dataclass(frozen=True)
class ContrastConfig:
    """Each training record contrasted with its prompt over a public image
    (:mod:`client.privacy.contrast`).

    A record's loss becomes its own minus ``weight`` times the loss of the same prompt and
    answer over the images of a public record of the same image shapes, summed in the record's
    unit before clipping: what the answer owes to the site's image, not to its words. The public
    images must be ones anyone may see (a public dataset of the site's kind, in the manifest
    format); nothing else of them is used, and the privacy guarantee of the site's own records
    is the same.

    Parameters
    ----------
    public_archive:
        An archive of public records, in the site archive's format.
    weight:
        ``lambda`` in ``L(image, answer) - lambda L(public image, answer)``, in ``(0, 1]``.
    records:
        Most public records whose images serve as controls.
    """

    public_archive: Path
    weight: float = 1.0
    records: int = 256


SECTIONS: dict[str, tuple[str, ...]] = {
    "site": (
        "name",
        "archive",
        "work_dir",
        "device",
        "decode_workers",
        "precision",
        "gradient_checkpointing",
        "token_budget",
    ),
    "model": ("spec",),
    "imaging": tuple(f.name for f in fields(ImagingConfig)),
    "policy": tuple(f.name for f in fields(Policy)),
    "subspace": tuple(f.name for f in fields(SubspaceConfig)),
    "contrast": tuple(f.name for f in fields(ContrastConfig)),
}


PRECISIONS = ("auto", "float32", "bfloat16")
CHECKPOINTING = ("auto", "true", "false")
DEFAULT_TOKEN_BUDGET = 10752
"""Tokens per forward pass: the memory model, with its 40 % margin for error, keeps a DP step of
the full-shape (2B) base within a 24 GB GPU at this budget for every sample kind, from 64-token
radiographs to 32-slice CT series of 4,096 visual tokens, at any row cap up to 64
(``docs/hospital-it.md``; modelled, no GPU measured it yet)."""


def default_decode_workers() -> int:
    """Threads that read the archive: one per core this process may run on, at most 8."""
    if hasattr(os, "sched_getaffinity"):
        return min(8, len(os.sched_getaffinity(0)))
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class SiteConfig:
    """One hospital: where its archive is, where FedUMIT may write, and its policy.

    ``model_spec`` (``[model] spec``) is the model spec TOML the site trains with: the base
    checkpoint on the site's own disk and the adapter layout the consortium agreed on.

    Memory on the site's GPU (``docs/hospital-it.md`` sizes them):

    ``precision``: ``auto`` keeps the frozen base in bfloat16 on a GPU that has it (float16 on
    an older one) and float32 on the CPU; ``float32`` or ``bfloat16`` everywhere otherwise. The
    trained adapter is float32 either way.
    ``gradient_checkpointing``: ``auto`` (on a GPU only), ``true`` or ``false``.
    ``token_budget``: most tokens per forward pass, rows times the longest row, visual tokens
    included (:func:`client.batching.pack`).
    """

    path: Path
    name: str
    archive: Path
    work_dir: Path
    model_spec: Path | None = None
    device: str = "auto"
    decode_workers: int = field(default_factory=default_decode_workers)
    precision: str = "auto"
    gradient_checkpointing: str = "auto"
    token_budget: int = DEFAULT_TOKEN_BUDGET
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    policy: Policy = field(default_factory=Policy)
    subspace: SubspaceConfig | None = None
    contrast: ContrastConfig | None = None

    def public_archive_config(self, section: str = "subspace") -> SiteConfig:
        """This config reading ``section``'s ``public_archive`` (``subspace`` or ``contrast``)
        in place of the site's archive, with a cache of its own in the work folder."""
        settings = getattr(self, section)
        if settings is None:
            raise SiteConfigError(self.path, section, f"no [{section}] section")
        return replace(
            self,
            name=f"{self.name} public archive",
            archive=settings.public_archive,
            work_dir=self.work_dir / "public",
        )

    @property
    def cache_dir(self) -> Path:
        """Preprocessed-pixel cache (never inside the archive)."""
        return self.work_dir / "cache"

    @property
    def ledger_path(self) -> Path:
        """The append-only privacy ledger."""
        return self.work_dir / "privacy_ledger.jsonl"

    @property
    def audit_path(self) -> Path:
        """The append-only audit log of every message in and every reply out."""
        return self.work_dir / "audit.jsonl"

    @property
    def log_path(self) -> Path:
        """The site's own detailed log (refusal and error details stay here)."""
        return self.work_dir / "site.log"


def load_site_config(path: str | Path) -> SiteConfig:
    """Read and validate a site config TOML file."""
    path = Path(path).resolve()
    if not path.is_file():
        raise SiteConfigError(path, "-", "file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SiteConfigError(path, "-", f"not valid TOML: {error}") from error
    return site_config_from_dict(data, path)


def site_config_from_dict(data: Mapping[str, Any], path: Path) -> SiteConfig:
    """Validate an already parsed site config; ``path`` locates relative paths and errors."""
    _check_names(data, path)
    reader = _Reader(data, path)
    archive = reader.path("site", "archive")
    if archive.is_relative_to(reader.path("site", "work_dir")) or reader.path(
        "site", "work_dir"
    ).is_relative_to(archive):
        raise SiteConfigError(path, "site.work_dir", "must not be inside the archive or hold it")
    device = reader.get("site", "device", str, "auto")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise SiteConfigError(path, "site.device", f"{device!r} is not auto, cpu, cuda or cuda:N")
    workers = reader.get("site", "decode_workers", int, default_decode_workers())
    if workers < 1:
        raise SiteConfigError(path, "site.decode_workers", f"must be at least 1, got {workers}")
    precision = reader.get("site", "precision", str, "auto")
    if precision not in PRECISIONS:
        reader.fail("site.precision", f"{precision!r} is not one of {list(PRECISIONS)}")
    checkpointing = reader.get("site", "gradient_checkpointing", (bool, str), "auto")
    checkpointing = str(checkpointing).lower()
    if checkpointing not in CHECKPOINTING:
        reader.fail("site.gradient_checkpointing", f"{checkpointing!r} is not auto, true or false")
    budget = reader.get("site", "token_budget", int, DEFAULT_TOKEN_BUDGET)
    if budget < 64:
        reader.fail("site.token_budget", f"must be at least 64 tokens, got {budget}")
    return SiteConfig(
        path=path,
        name=reader.require("site", "name", str),
        archive=archive,
        work_dir=reader.path("site", "work_dir"),
        model_spec=reader.path("model", "spec") if "spec" in data.get("model", {}) else None,
        device=device,
        decode_workers=workers,
        precision=precision,
        gradient_checkpointing=checkpointing,
        token_budget=budget,
        imaging=_imaging(reader),
        policy=_policy(reader),
        subspace=_subspace(reader, archive) if "subspace" in data else None,
        contrast=_contrast(reader, archive) if "contrast" in data else None,
    )


def _check_names(data: Mapping[str, Any], path: Path) -> None:
    """Refuse an unknown section, or an unknown key in a known one: a misspelt key would
    otherwise leave its default in force (``max_epslion`` the default privacy budget)."""
    for section in sorted(data):
        if section not in SECTIONS:
            raise SiteConfigError(path, section, f"unknown section{_closest(section, SECTIONS)}")
        if not isinstance(data[section], Mapping):
            raise SiteConfigError(path, section, "must be a table")
        unknown = sorted(set(data[section]) - set(SECTIONS[section]))
        if unknown:
            reason = f"unknown key in [{section}]{_closest(unknown[0], SECTIONS[section])}"
            raise SiteConfigError(path, f"{section}.{unknown[0]}", reason)


def _closest(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or nothing when none is close."""
    match = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def _imaging(reader: _Reader) -> ImagingConfig:
    default = ImagingConfig()
    window = reader.get("imaging", "ct_window", (str, list), "soft-tissue")
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            reader.fail("imaging.ct_window", f"{window!r} is not one of {sorted(CT_WINDOWS)}")
        ct_window = CT_WINDOWS[window]
    else:
        if len(window) != 2 or not all(isinstance(v, (int, float)) for v in window):
            reader.fail("imaging.ct_window", "must be a window name or [centre, width]")
        if window[1] <= 0:
            reader.fail("imaging.ct_window", "window width must be positive")
        ct_window = (float(window[0]), float(window[1]))
    low, high = reader.get("imaging", "intensity_percentiles", list, [0.5, 99.5])
    if not 0 <= low < high <= 100:
        reader.fail("imaging.intensity_percentiles", "needs 0 <= low < high <= 100")
    index = reader.get("imaging", "nifti_volume_index", int, default.nifti_volume_index)
    if index < 0:
        reader.fail("imaging.nifti_volume_index", "must be >= 0")
    limits = {
        key: reader.get("imaging", key, int, getattr(default, key))
        for key in ("max_pixels", "max_voxels")
    }
    for key, value in limits.items():
        if value < 1:
            reader.fail(f"imaging.{key}", f"must be a positive count, got {value}")
    return ImagingConfig(
        ct_window=ct_window,
        prefer_file_window=reader.get("imaging", "prefer_file_window", bool, True),
        nifti_volume_index=index,
        intensity_percentiles=(float(low), float(high)),
        **limits,
    )


def _public_archive(reader: _Reader, section: str, archive: Path) -> Path:
    """``[section] public_archive``: a directory apart from the site's archive."""
    public = reader.path(section, "public_archive")
    if public.is_relative_to(archive) or archive.is_relative_to(public):
        reader.fail(
            f"{section}.public_archive", "must not be the site's archive, inside it or hold it"
        )
    if not public.is_dir():
        reader.fail(f"{section}.public_archive", f"{public} is not a directory")
    return public


def _contrast(reader: _Reader, archive: Path) -> ContrastConfig:
    default = ContrastConfig(Path())
    public = _public_archive(reader, "contrast", archive)
    weight = float(reader.get("contrast", "weight", (int, float), default.weight))
    if not 0.0 < weight <= 1.0:
        reader.fail("contrast.weight", f"must be in (0, 1], got {weight}")
    records = reader.get("contrast", "records", int, default.records)
    if records < 1:
        reader.fail("contrast.records", f"must be at least 1, got {records}")
    return ContrastConfig(public_archive=public, weight=weight, records=records)


def _subspace(reader: _Reader, archive: Path) -> SubspaceConfig:
    default = SubspaceConfig(Path())
    public = _public_archive(reader, "subspace", archive)
    directions = reader.get("subspace", "directions", int, default.directions)
    records = reader.get("subspace", "records", int, default.records)
    if directions < 1:
        reader.fail("subspace.directions", f"must be at least 1, got {directions}")
    if records < directions:
        reader.fail(
            "subspace.records", f"must be at least directions ({directions}), got {records}"
        )
    return SubspaceConfig(
        public_archive=public,
        directions=directions,
        records=records,
        by_task=reader.get("subspace", "by_task", bool, default.by_task),
    )


def _policy(reader: _Reader) -> Policy:
    default = Policy()
    stages = tuple(reader.get("policy", "stages", list, list(default.stages)))
    tasks = tuple(reader.get("policy", "tasks", list, list(default.tasks)))
    for key, values, allowed in (("stages", stages, STAGES), ("tasks", tasks, TASK_NAMES)):
        bad = [v for v in values if v not in allowed]
        if bad:
            reader.fail(f"policy.{key}", f"{bad} not in {list(allowed)}")
    unit = reader.get("policy", "privacy_unit", str, default.privacy_unit)
    if unit not in PRIVACY_UNITS:
        reader.fail("policy.privacy_unit", f"{unit!r} is not one of {list(PRIVACY_UNITS)}")
    splits = tuple(reader.get("policy", "eval_splits", list, list(default.eval_splits)))
    if not splits or any(split not in EVALUATION_SPLITS for split in splits):
        reader.fail(
            "policy.eval_splits",
            f"{list(splits)}: allowed are {list(EVALUATION_SPLITS)} (never train)",
        )
    seed = reader.get("policy", "replayable_noise_seed", int, default.replayable_noise_seed)
    derive = reader.get("policy", "derive_stage1", str, default.derive_stage1)
    if derive not in DERIVE_MODES:
        reader.fail("policy.derive_stage1", f"{derive!r} is not one of {list(DERIVE_MODES)}")
    policy = Policy(
        stages=stages,
        tasks=tasks,
        privacy_unit=unit,
        max_epsilon=float(reader.get("policy", "max_epsilon", (int, float), default.max_epsilon)),
        delta=float(reader.get("policy", "delta", (int, float), default.delta)),
        max_local_epochs=float(
            reader.get("policy", "max_local_epochs", (int, float), default.max_local_epochs)
        ),
        max_batch_size=reader.get("policy", "max_batch_size", int, default.max_batch_size),
        max_learning_rate=float(
            reader.get("policy", "max_learning_rate", (int, float), default.max_learning_rate)
        ),
        require_dp=reader.get("policy", "require_dp", bool, default.require_dp),
        eval_splits=splits,
        min_group_size=reader.get("policy", "min_group_size", int, default.min_group_size),
        score_decimals=reader.get("policy", "score_decimals", int, default.score_decimals),
        max_evaluations_per_run=reader.get(
            "policy", "max_evaluations_per_run", int, default.max_evaluations_per_run
        ),
        max_evaluations=reader.get("policy", "max_evaluations", int, default.max_evaluations),
        max_eval_records=reader.get("policy", "max_eval_records", int, default.max_eval_records),
        send_train_loss=reader.get("policy", "send_train_loss", bool, default.send_train_loss),
        count_rounding=reader.get("policy", "count_rounding", int, default.count_rounding),
        replayable_noise_seed=seed,
        derive_stage1=derive,
        balance_answers=reader.get("policy", "balance_answers", bool, default.balance_answers),
        answer_count_noise=float(
            reader.get("policy", "answer_count_noise", (int, float), default.answer_count_noise)
        ),
    )
    checks = (
        ("max_epsilon", policy.max_epsilon > 0, "must be positive"),
        ("delta", 0 < policy.delta < 1, "must be in (0, 1)"),
        ("max_local_epochs", policy.max_local_epochs > 0, "must be positive"),
        ("max_batch_size", policy.max_batch_size > 0, "must be positive"),
        ("max_learning_rate", policy.max_learning_rate > 0, "must be positive"),
        ("min_group_size", policy.min_group_size >= 1, "must be at least 1"),
        ("score_decimals", 0 <= policy.score_decimals <= 6, "must be in 0..6"),
        ("max_evaluations_per_run", policy.max_evaluations_per_run >= 0, "must be >= 0"),
        ("max_evaluations", policy.max_evaluations >= 0, "must be >= 0"),
        ("max_eval_records", policy.max_eval_records >= 0, "must be >= 0 (0: every record)"),
        ("count_rounding", policy.count_rounding >= 1, "must be at least 1"),
        ("answer_count_noise", policy.answer_count_noise > 0, "must be positive"),
    )
    for key, ok, reason in checks:
        if not ok:
            reader.fail(f"policy.{key}", reason)
    return policy


class _Reader:
    """Typed access to a parsed TOML document (names checked by :func:`_check_names`) that
    names file and key in every error."""

    def __init__(self, data: Mapping[str, Any], path: Path) -> None:
        self.data, self.file = data, path

    def fail(self, key: str, reason: str) -> None:
        raise SiteConfigError(self.file, key, reason)

    def get(self, section: str, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        table = self.data.get(section, {})
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            self.fail(f"{section}.{key}", f"expected a number, got {value!r}")
        if not isinstance(value, kind):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            names = " or ".join(k.__name__ for k in kinds)
            self.fail(f"{section}.{key}", f"expected {names}, got {value!r}")
        return value

    def require(self, section: str, key: str, kind: type) -> Any:
        if key not in self.data.get(section, {}):
            self.fail(f"{section}.{key}", "missing")
        return self.get(section, key, kind, None)

    def path(self, section: str, key: str) -> Path:
        value = Path(self.require(section, key, str)).expanduser()
        return value if value.is_absolute() else (self.file.parent / value).resolve()
