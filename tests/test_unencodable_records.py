"""A record the model cannot take (a prompt longer than the spec's ``max_text_length``) is
skipped and named with its manifest line and reason; the site's rounds train on the others."""

from __future__ import annotations

import json
from pathlib import Path

from client.config import load_site_config
from client.stage1 import DERIVED_SUFFIX
from server.coordinator import initial_arrays
from simulations.synthetic import generate_consortium
from tests.test_site_privacy import small_site, train_config

LONG_ID = "too-long"
PATIENTS = 6


def add_long_question(archive: Path) -> int:
    """Append a training VQA record whose question is thousands of tokens long, over an image
    of the archive, as a patient of its own; return its manifest line."""
    manifest = archive / "manifest.jsonl"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    template = next(
        record
        for record in map(json.loads, lines)
        if record["task"] == "vqa" and record["split"] == "train"
    )
    question = "Is there a lesion in the upper part of the left lung field? " * 200
    long = {**template, "id": LONG_ID, "patient_id": LONG_ID, "question": question}
    lines.append(json.dumps(long))
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def test_an_over_long_prompt_is_skipped_and_named_once(tmp_path: Path, tiny_base: Path) -> None:
    from client.rounds import train_round
    from client.site import Site

    config = load_site_config(small_site(tmp_path, tiny_base, patients=PATIENTS))
    line = add_long_question(config.archive)
    site = Site(config, progress=False)
    assert LONG_ID in {s.record_id for s in site.samples("train", "instruct")}
    arrays = initial_arrays(site.spec, "instruct", 0, None)

    every_patient = {"batch-size": PATIENTS + 1}  # each step samples every patient's records
    first = train_round(site, arrays, train_config(site.fingerprint) | every_patient)
    second = train_round(site, first.arrays, train_config(site.fingerprint, 2) | every_patient)

    assert first.metrics["steps"] == second.metrics["steps"] == 2
    assert [entry.settled for entry in site.ledger.entries()] == [True, True]
    log = config.log_path.read_text(encoding="utf-8")
    named = f"record {LONG_ID} (line {line}, manifest.jsonl): prompt of "
    assert log.count(named) == 1, log
    assert f"max_text_length={site.spec.max_text_length}" in log
    trainer = site.trainer("instruct")
    usable = site.encodable(trainer, site.samples("train", "instruct"))
    assert LONG_ID not in {s.record_id for s in usable}
    assert len(usable) == len(site.samples("train", "instruct")) - 1


def test_a_derived_caption_points_at_its_record_line(tmp_path: Path) -> None:
    from client.site import unfit_problems

    archive = generate_consortium(tmp_path, n_sites=1, patients=2, seed=5)[0]
    lines = (archive / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[2])["id"]

    (problem,) = unfit_problems({record + DERIVED_SUFFIX: "too long"}, archive)
    assert (problem.record_id, problem.line, problem.file, problem.reason) == (
        record + DERIVED_SUFFIX, 3, "manifest.jsonl", "too long"
    )  # fmt: skip
