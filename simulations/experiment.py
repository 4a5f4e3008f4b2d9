"""The simulation experiment behind ``fedumit simulate``: base, hospitals, run, report."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from server.run_folder import new_run_id, write_json_atomically
from server.warm_start import WarmStart
from shared_model.evaluation import score_predictions
from shared_model.option_scores import option_auc
from shared_model.sample import Sample
from shared_model.spec import SPEC_FILE, ModelSpec
from shared_model.tasks import STAGE_TASKS, score_rows
from simulations.bootstrap import option_auc_scorer, paired_intervals
from simulations.class_recall import class_recall, print_class_recall
from simulations.datasets import patient_count, public_archives, public_stand_in
from simulations.defaults import learning_rate
from simulations.heldout import ModelAnswers, answer_and_rank, answer_heldout, held_out_samples
from simulations.heldout_plot import draw_heldout
from simulations.language_twins import LanguageGap, language_gaps, language_twin
from simulations.majority import MAJORITY, VS_MAJORITY, add_majority
from simulations.noise_outlook import SIGNAL_SHARE, outlook_line, schedule_forecast
from simulations.report import Change, add_intervals, print_answers, print_metric_table
from simulations.runner import simulate, write_site_config
from simulations.synthetic import (
    HospitalProfile,
    consortium_profiles,
    generate_public_archive,
    write_hospital,
)
from simulations.verdict import judged_metric, verdict, verdict_lines
from simulations.warm_base import warm_started

ROUND_0 = "round 0"
FINAL = "final"
CHANGES = (Change(ROUND_0, FINAL), Change(MAJORITY, FINAL, VS_MAJORITY))
CONSORTIUM_SPEC = "model.toml"


def model_spec_file(out: Path, base: Path | None) -> Path:
    """The consortium's own copy of its model spec, ``out/model.toml``: a given checkpoint's
    spec beside it (a tiny base written with ``fedumit model tiny --out DIR`` has one: its
    canvas, slices and LoRA layout), else the checkpoint with the default layout; without a
    checkpoint, the tiny base's (a tiny base already in ``out/tiny-base``, else the user-level
    cache's, built once). A copy, because the file beside a cached base is rewritten by
    whichever FedUMIT version last used the cache, and a run must keep the layout it began
    with."""
    from shared_model.tiny import ensure_tiny_base

    if base is not None:
        beside = base / SPEC_FILE
        spec = ModelSpec.from_toml(beside) if beside.is_file() else ModelSpec(base=base.resolve())
    else:
        local = out / "tiny-base"
        spec = ModelSpec.from_toml(
            ensure_tiny_base(local if (local / "config.json").is_file() else None) / SPEC_FILE
        )
    return spec.write_toml(out / CONSORTIUM_SPEC)


SITE_EVAL_RECORDS = 300
"""Every virtual site's ``[policy] max_eval_records``: the federated evaluations at the end of
each stage score at most this many of a site's validation records (a fixed subset), so that
their cost stays bounded at any hospital size (the middle synthetic hospital holds about 700
validation records at the default size, 2,900 at ``--patients 1600``)."""


def site_archives(args: argparse.Namespace) -> list[Path]:
    """Existing archives, a public dataset split across hospitals, or synthetic hospitals."""
    if args.archives:
        return [Path(a).resolve() for a in args.archives]
    if args.dataset != "synthetic":
        return public_archives(
            args.dataset,
            args.out / "archives",
            data_root=args.data_root,
            sites=args.sites,
            partition=args.partition,
            limit=args.limit,
            seed=args.seed,
            alpha=args.alpha,
            public_patients=args.public_patients if wants_public_archive(args) else 0,
        )
    profiles = consortium_profiles(args.sites, args.patients, args.seed)
    return write_hospitals(args.out / "archives", profiles)


PARALLEL_WRITING_FROM = 1000
"""Patients over all synthetic hospitals from which they are written on several processes."""


def write_hospitals(
    out: Path, profiles: Sequence[HospitalProfile], workers: int | None = None
) -> list[Path]:
    """Each profile's archive under ``out``, the same bytes however many processes write them.

    From :data:`PARALLEL_WRITING_FROM` patients, on Linux, on up to one process per core
    (``workers``), the largest hospital first: pydicom's writer is pure Python, so threads would
    share one core. The processes are forked, so that no caller needs a ``__main__`` guard;
    they write files with numpy, pydicom and nibabel only, never torch.
    """
    folders = [out / profile.name for profile in profiles]
    if workers is None:
        large = sum(p.patients for p in profiles) >= PARALLEL_WRITING_FROM
        workers = (os.cpu_count() or 1) if large and sys.platform == "linux" else 1
    workers = min(workers, len(profiles))
    if workers < 2:
        return [write_hospital(folder, p) for folder, p in zip(folders, profiles, strict=True)]
    order = sorted(range(len(profiles)), key=lambda i: -profiles[i].patients)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        jobs = [pool.submit(write_hospital, folders[i], profiles[i]) for i in order]
        for job in jobs:
            job.result()  # raises what the hospital's process raised
    return folders


@dataclass(frozen=True)
class Consortium:
    """What every simulated run of one experiment shares: the model and the hospitals."""

    out: Path
    spec_file: Path
    archives: list[Path]
    subspace: dict[str, Any] | None = None
    """Every site's ``[subspace]`` table (a public archive and ``directions``), or none."""
    contrast: dict[str, Any] | None = None
    """Every site's ``[contrast]`` table (a public archive and ``weight``), or none."""
    balance_answers: bool = False
    """Every site's ``[policy] balance_answers``."""
    tasks: tuple[str, ...] | None = None
    """Every site's ``[policy] tasks`` (:func:`site_tasks`), or none: every task."""
    max_eval_records: int = SITE_EVAL_RECORDS
    """Every site's ``[policy] max_eval_records``."""

    @property
    def spec(self) -> ModelSpec:
        """The model spec every site and the server use."""
        return ModelSpec.from_toml(self.spec_file)

    def site_configs(
        self,
        run_id: str,
        archives: Sequence[Path],
        *,
        epsilon: float,
        dp: bool,
        seed: int,
        delta: float = 1e-5,
    ) -> list[Path]:
        """Fresh site configs for ``archives`` (work folders, and so ledgers, of this run); each
        virtual site keys its sampling and noise from ``seed`` (replayable: a simulation) and
        reports its training loss for the run's plots."""
        runs = self.out / "runs" / run_id
        return [
            write_site_config(
                runs / "sites" / f"{archive.name}.toml",
                name=archive.name,
                archive=archive,
                work_dir=runs / "work" / archive.name,
                model_spec=self.spec_file,
                max_epsilon=epsilon,
                delta=delta,
                require_dp=dp,
                replayable_noise_seed=seed,
                send_train_loss=True,
                subspace=self.subspace,
                contrast=self.contrast,
                balance_answers=self.balance_answers,
                tasks=self.tasks,
                max_eval_records=self.max_eval_records,
            )
            for archive in archives
        ]


REPLAYABLE_NOTE = (
    "[dim]virtual sites key their sampling and noise from seed {seed} in their own configs "
    "(replayable_noise_seed), so the run repeats; a deployed site draws them from the "
    "operating system[/]"
)


def prepare_consortium(args: argparse.Namespace, console: Console) -> Consortium:
    """The base model (built when missing) and the hospitals' archives, under ``args.out``."""
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    console.print("base model")
    spec_file = model_spec_file(out, args.base)
    console.print("hospitals")
    archives = site_archives(argparse.Namespace(**{**vars(args), "out": out}))
    if args.warm_start:
        public = public_archive(args, out, console, "--warm-start", "the warm start")
        settings = WarmStart(steps=args.warm_start, seed=args.seed)
        warm_started(spec_file, public, settings, out, console).write_toml(spec_file)
    return Consortium(
        out,
        spec_file,
        archives,
        subspace_table(args, out, console),
        contrast_table(args, out, console),
        balance_answers=bool(args.balance_answers),
        tasks=site_tasks(args.tasks),
    )


def site_tasks(instruct: Sequence[str] | None) -> tuple[str, ...] | None:
    """A site policy's tasks for ``--tasks``: stage 1's (captions and comparisons, derived from
    the chosen tasks' records where the archive has none) and the chosen ``instruct`` tasks;
    none when every task is trained."""
    if not instruct:
        return None
    return (*STAGE_TASKS["align"], *dict.fromkeys(instruct))


def subspace_table(args: argparse.Namespace, out: Path, console: Console) -> dict[str, Any] | None:
    """The sites' ``[subspace]`` table for ``--subspace k`` (none for 0): a public archive of
    the hospitals' kind (:func:`public_archive`) whose gradients give the ``k`` directions DP
    noise is added in."""
    if not args.subspace:
        return None
    public = public_archive(args, out, console, "--subspace", "the gradient subspace")
    return {"public_archive": str(public), "directions": args.subspace}


def contrast_table(args: argparse.Namespace, out: Path, console: Console) -> dict[str, Any] | None:
    """The sites' ``[contrast]`` table for ``--contrast lambda`` (none for 0): a public archive
    of the hospitals' kind (:func:`public_archive`) whose images each training record is
    contrasted with (:mod:`client.privacy.contrast`)."""
    if not args.contrast:
        return None
    public = public_archive(args, out, console, "--contrast", "the contrast images")
    return {"public_archive": str(public), "weight": args.contrast}


def wants_public_archive(args: argparse.Namespace) -> bool:
    """Whether the run's sites need a public archive of the hospitals' kind."""
    return any(getattr(args, option, 0) for option in ("subspace", "contrast", "warm_start"))


def public_archive(
    args: argparse.Namespace, out: Path, console: Console, option: str, purpose: str
) -> Path:
    """A public archive of the hospitals' kind for ``option``: generated under ``out`` for the
    synthetic hospitals; for a public dataset, the ``--public-patients`` train patients
    :func:`site_archives` gave to no hospital."""
    if args.archives:
        raise SystemExit(
            f"{option} needs public records of the hospitals' kind, which this run cannot "
            f"tell for --archives ({option} 0)"
        )
    if args.dataset == "synthetic":
        public = generate_public_archive(out / "public", seed=args.seed)
    else:
        public = public_stand_in(out / "archives", args.dataset)
    console.print(f"public records for {purpose}: {public} ({patient_count(public)} patients)")
    return public


def run_overrides(
    args: argparse.Namespace,
    consortium: Consortium,
    run_id: str,
    *,
    sites: int,
    dp: bool,
    steps_scale: int = 1,
    seed: int | None = None,
) -> dict[str, Any]:
    """The run config of one simulated run of ``args``'s schedule (training seed ``seed``,
    by default ``args.seed``, the one the data was generated with)."""
    return {
        "run-dir": str(consortium.out / "runs"),
        "run-id": run_id,
        "model-spec": str(consortium.spec_file),
        "seed": args.seed if seed is None else seed,
        "dp": dp,
        "aggregation": args.aggregation,
        "min-sites": min(2, sites),
        "min-available-sites": sites,
        "eval-every": args.eval_every,
        "eval-at-start": args.eval_every > 0,
        "max-grad-norm": args.max_grad_norm,
        "export-average-rounds": args.export_average_rounds,
        "align.rounds": args.align_rounds,
        "align.local-steps": args.align_steps * steps_scale,
        "align.batch-size": args.align_batch,
        "align.lr": learning_rate(args, "align", dp),
        "align.lr-decay": 1.0,
        "instruct.rounds": args.instruct_rounds,
        "instruct.local-steps": args.instruct_steps * steps_scale,
        "instruct.batch-size": args.instruct_batch,
        "instruct.lr": learning_rate(args, "instruct", dp),
        "instruct.lr-decay": 1.0,
    }


def scored_rows(
    samples: Sequence[Sample], before: ModelAnswers, after: ModelAnswers
) -> list[dict[str, Any]]:
    """The table's rows: round 0, the exported model and, for the tasks with discrete answers,
    the majority-answer baseline's headline score, each difference with its interval, and the
    closed tasks' ``option_auc`` from each model's option likelihoods."""
    columns = {
        name: {
            **score_predictions(samples, model.readings),
            **option_auc(samples, model.likelihoods),
        }
        for name, model in ((ROUND_0, before), (FINAL, after))
    }
    intervals = {
        **paired_intervals(samples, [before.readings], [after.readings]),
        **paired_intervals(
            samples, [before.likelihoods], [after.likelihoods], scorer=option_auc_scorer
        ),
    }
    rows = add_intervals(score_rows(columns), intervals)
    return add_majority(rows, samples, [after.readings])


def same_image_gaps(
    samples: Sequence[Sample],
    paired: Sequence[int],
    twins: Sequence[Sample | None],
    model: ModelAnswers,
) -> list[LanguageGap]:
    """Chinese minus English of ``model`` over the test records at ``paired`` and their
    language twins, on each judged task's metric."""
    metrics = {task: judged_metric(task) for task in {samples[i].task for i in paired}}
    return language_gaps(
        [samples[i] for i in paired],
        [model.readings[i] for i in paired],
        [twins[i] for i in paired],
        [answer.reading for answer in model.twin_answers],
        {task: metric for task, metric in metrics.items() if metric is not None},
    )


def run_experiment(args: argparse.Namespace) -> int:
    """Build everything a simulated consortium needs, run it, and print what it learned."""
    console = Console(stderr=args.json)
    console.rule("[bold]FedUMIT simulation")
    consortium = prepare_consortium(args, console)
    run_id = new_run_id()
    sites = consortium.site_configs(
        run_id,
        consortium.archives,
        epsilon=args.epsilon,
        dp=args.dp,
        seed=args.seed,
        delta=args.delta,
    )
    privacy = f"epsilon {args.epsilon:g} at delta {args.delta:g} per site" if args.dp else "off"
    balanced = "; closed answers balanced" if consortium.balance_answers else ""
    trained = f"; instruct trains {', '.join(dict.fromkeys(args.tasks))} only" if args.tasks else ""
    averaged = args.export_average_rounds
    exported = f"; export the mean of the last {averaged} instruct rounds" if averaged > 1 else ""
    console.print(
        f"federated run {run_id}: {len(sites)} sites, align {args.align_rounds} rounds, "
        f"instruct {args.instruct_rounds} rounds, DP {privacy}{balanced}{trained}{exported}"
    )
    console.print(REPLAYABLE_NOTE.format(seed=args.seed))
    outlook = None
    if args.dp:
        outlook = schedule_forecast(args, consortium.archives, consortium.spec, consortium.subspace)
        console.print(outlook_line(outlook))
    overrides = run_overrides(args, consortium, run_id, sites=len(sites), dp=args.dp)
    folder = simulate(sites, overrides)
    export = folder.root / "export"
    if not export.is_dir():
        console.print(f"[red]the run stopped before its last round; see {folder.metrics_path}")
        return 1
    spec = consortium.spec
    console.print("held-out test split: the base (round 0) and the exported model")
    samples = held_out_samples(sites, spec, per_group=args.test_per_group)
    twins = [language_twin(sample) for sample in samples]
    paired = [i for i, twin in enumerate(twins) if twin is not None]
    before, after = (
        answer_and_rank(spec.base, samples, spec),
        answer_and_rank(export, samples, spec, twins=[twins[i] for i in paired]),
    )
    rows = scored_rows(samples, before, after)
    answers = answer_heldout(samples, after)
    gaps = same_image_gaps(samples, paired, twins, after)
    classes = class_recall(samples, {ROUND_0: before.readings, FINAL: after.readings})
    learned = verdict(rows, ROUND_0, FINAL, gaps)
    picture = draw_heldout(rows, ROUND_0, FINAL, folder.plots / "heldout.png")
    summary = {
        "run": str(folder.root),
        "export": str(export),
        "replayable_noise_seed": args.seed,
        "noise_forecast": outlook.as_dict(SIGNAL_SHARE) if outlook is not None else None,
        "table": rows,
        "verdict": learned.as_dict(),
        "language_gaps": [{**asdict(gap), "gap": round(gap.gap, 4)} for gap in gaps],
        "classes": classes,
        "heldout_plot": str(picture) if picture else None,
        "answers": answers,
    }
    write_json_atomically(folder.root / "summary.json", summary)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    title = f"test split of {len(sites)} hospitals ({len(samples)} records): round 0 vs final"
    print_metric_table(rows, (MAJORITY, ROUND_0, FINAL), title, console, CHANGES)
    console.print(
        f"[dim]{MAJORITY}: every closed question and class answered with the test records' most "
        "common answer, the best any constant answer scores.[/]"
    )
    if classes:
        print_class_recall(classes, (ROUND_0, FINAL), console)
    print_answers(answers, console)
    console.print("[bold]what the consortium learned[/]\n" + "\n".join(verdict_lines(learned)))
    console.print(
        f"run folder: {folder.root}\nexported model: {export}\nplots: {folder.plots}\n"
        f"summary: {folder.root / 'summary.json'}"
    )
    return 0
