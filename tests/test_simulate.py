"""``fedumit simulate`` end to end, on a smaller configuration of the same code as the default.

Three synthetic hospitals (one mostly Chinese) run ``align`` then ``instruct`` with DP-SGD at a
real budget (epsilon 8 at delta 1e-5 per site) in Flower's simulation engine, with the main
job's noise in a subspace of public gradients and balanced answers; the run is exported and the
exported model is scored on the pooled held-out test split against the base (round 0). Sites
key their sampling and noise from their replayable_noise_seed, so the run repeats. The test
fails when learning under DP regresses: the training loss must fall, reports must improve
beyond their interval in both languages and classification in English (and rise in Chinese),
nine answers in ten must stay well-formed, and closed VQA must not end below round 0 in either
language.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from transformers import Qwen2VLForConditionalGeneration

from client.audit import REPLIED, AuditLog
from client.config import load_site_config
from client.privacy import PrivacyLedger
from client.privacy.answer_prior import RELEASE_STAGE
from fedumit.cli import main
from protocol import ARRAYS
from simulations.report import closed_form, established
from simulations.verdict import judged_rows

pytestmark = pytest.mark.slow

CJK = re.compile(r"[\u4e00-\u9fff：]")
LANGS = ("en", "zh")
ARGS = [
    "--sites", "3",
    "--patients", "160",
    "--align-steps", "5",
    "--align-batch", "48",
    "--instruct-rounds", "3",
    "--instruct-steps", "8",
    "--instruct-batch", "48",
    "--test-per-group", "30",
    "--epsilon", "8",
    "--seed", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> dict[str, Any]:
    """One ``fedumit simulate`` run (the session's tiny base linked in, as the command finds it)."""
    out = tmp_path_factory.mktemp("simulate")
    (out / "tiny-base").symlink_to(tiny_base, target_is_directory=True)
    shown = {"flwr": _Collector(), "root": _Collector()}  # what Flower's handler and ours get
    logging.getLogger("flwr").addHandler(shown["flwr"])
    logging.getLogger().addHandler(shown["root"])
    try:
        code = main(["simulate", "--out", str(out), *ARGS])
    finally:
        logging.getLogger("flwr").removeHandler(shown["flwr"])
        logging.getLogger().removeHandler(shown["root"])
    summaries = list((out / "runs").glob("*/summary.json"))
    assert code == 0 and len(summaries) == 1, f"exit {code}, summaries {summaries}"
    summary = json.loads(summaries[0].read_text(encoding="utf-8"))
    return {"out": out, "run": Path(summary["run"]), "summary": summary, "shown": shown}


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_flower_prints_once_and_without_its_simulation_deprecation(simulation) -> None:
    """Flower's records go to its own console handler only (ours would print each again, and
    its DEBUG lines), and its notice that ``run_simulation`` is deprecated is not shown."""
    flower = [r.getMessage() for r in simulation["shown"]["flwr"].records]
    assert flower, "Flower logged nothing: the collector is not where its records go"
    assert not [m for m in flower if "`run_simulation` function is deprecated" in m]
    passed_on = [r for r in simulation["shown"]["root"].records if r.name.startswith("flwr")]
    assert not passed_on, [r.getMessage() for r in passed_on]
    ours = [r for r in simulation["shown"]["root"].records if r.name.startswith("server")]
    assert ours, "FedUMIT's own progress no longer reaches the console"


def test_both_stages_ran_with_dp_and_were_checkpointed(simulation: dict[str, Any]) -> None:
    run = simulation["run"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [(r["stage"], r["round"]) for r in records if "train_loss" in r]
    assert trained == [("align", 1), ("instruct", 1), ("instruct", 2), ("instruct", 3)]
    for record in records:
        if "train_loss" in record:
            assert len(record["sites"]) == 3 and not record["rejected"]
            assert all(0 < eps <= 8.0 for eps in record["epsilon"].values())
    assert all(eps > 7.0 for eps in records[-1]["epsilon"].values())  # the budget is used
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.safetensors"))
    assert checkpoints == [
        "align-round-0001.safetensors",
        "instruct-round-0001.safetensors",
        "instruct-round-0002.safetensors",
        "instruct-round-0003.safetensors",
    ]
    assert {p.name for p in (run / "plots").glob("*.png")} >= {"training.png", "privacy.png"}
    # balanced answers (the main job's default) release each site's answer counts once, in
    # the first instruct round, before it trains: the ledger holds that release too
    spent = [trained[0], (RELEASE_STAGE, 1), *trained[1:]]
    for site in (run / "sites").glob("*.toml"):
        config = load_site_config(site)
        assert config.policy.balance_answers and config.subspace is not None
        ledger = PrivacyLedger(config.ledger_path).entries()
        assert [(e.stage, e.server_round) for e in ledger] == spent


def test_the_noise_forecast_agrees_with_the_sites_ledgers(simulation: dict[str, Any]) -> None:
    """The forecast printed before training counts each site's patients as its sampler does
    (the same rates) and estimates its sigma within a tenth: here the ``align`` round is
    shorter than the ``instruct`` ones, which the forecast takes as alike."""
    predicted = simulation["summary"]["noise_forecast"]
    sites = sorted((simulation["run"] / "sites").glob("*.toml"))
    assert predicted["dimensions"] == 128 and len(predicted["sites"]) == len(sites) == 3
    for forecast, site in zip(predicted["sites"], sites, strict=True):
        ledger = PrivacyLedger(load_site_config(site).ledger_path).entries()
        trained = [entry for entry in ledger if entry.stage in ("align", "instruct")]
        for entry in trained:
            assert entry.sample_rate == pytest.approx(forecast["sample_rate"])
        for entry in trained[1:]:
            assert entry.noise_multiplier == pytest.approx(forecast["noise_multiplier"], rel=0.1)


def test_export_loads_with_plain_transformers(simulation: dict[str, Any]) -> None:
    export = Path(simulation["summary"]["export"])
    model = Qwen2VLForConditionalGeneration.from_pretrained(export)
    assert model.config.model_type == "qwen2_vl"
    assert (export / "adapters" / "align").is_dir() and (export / "adapters" / "instruct").is_dir()
    card = (export / "README.md").read_text(encoding="utf-8")
    assert "epsilon" in card.lower() and simulation["run"].name in card


def test_learning_under_dp_at_epsilon_8(simulation: dict[str, Any]) -> None:
    """Learning under DP at a real budget: the sites' training loss falls over the rounds of
    ``instruct``, report BLEU-1 rises beyond its interval in both languages and English
    classification beyond its interval, Chinese classification rises, nine answers in ten are
    well-formed at the end, and closed VQA ends no worse than the base in either language.
    (The base writes the tasks' formats from its public phase, so the first round's loss is
    already low: 0.51, then 0.42. Chinese classification need only rise: its 30 test records
    give too wide an interval at this size.)"""
    run = simulation["run"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if r["stage"] == "instruct" and "train_loss" in r]
    assert len(losses) == 3 and min(losses[1:]) < losses[0], losses
    verdict = simulation["summary"]["verdict"]
    learned = {"report/en", "report/zh", "classification/en"}
    assert learned <= set(verdict["improved"]), verdict
    assert verdict["well_formed"] >= 0.9, verdict
    rows = closed_form(simulation["summary"]["table"])
    chinese = next(r for r in rows if r["lang"] == "zh" and r["task"] == "classification")
    assert chinese["final"] > chinese["round 0"], chinese
    for lang in ("en", "zh"):
        row = next(r for r in rows if r["lang"] == lang and r["task"] == "vqa")
        assert established(row) >= 0, f"{lang}: closed VQA fell below round 0: {row}"


def test_table_rows_say_which_is_the_headline(simulation: dict[str, Any]) -> None:
    table = simulation["summary"]["table"]
    groups = {(r["task"], r["lang"]) for r in table}
    headlines = {(r["task"], r["lang"]) for r in table if r["headline"]}
    shares = {(r["task"], r["lang"]) for r in table if r["metric"] == "well_formed"}
    assert all(isinstance(r["headline"], bool) for r in table)
    assert groups == shares and headlines <= groups
    assert sum(r["headline"] for r in table) == len(headlines)  # one per task and language
    baselines = {(r["task"], r["lang"]) for r in table if r["majority"] is not None}
    discrete = {(t, lang) for t, lang in headlines if t in ("vqa", "classification")}
    assert baselines == discrete and all(0.0 < r["majority"] <= 1.0 for r in table if r["majority"])


def test_table_ranks_the_options_of_classes_and_closed_questions(
    simulation: dict[str, Any],
) -> None:
    """Beside each strict score of a task with listed options: how well the base (round 0)
    and the exported model rank the right option by its likelihood, with the interval of the
    difference."""
    table = simulation["summary"]["table"]
    ranked = {(r["task"], r["lang"]): r for r in table if r["metric"] == "option_auc"}
    assert set(ranked) == {(task, lang) for task in ("vqa", "classification") for lang in LANGS}
    for row in ranked.values():
        assert not row["headline"] and row["better"] == "higher" and row["majority"] is None
        assert all(0.0 <= row[column] <= 1.0 for column in ("round 0", "final")), row
        low, high = row["interval"]
        assert -1.0 <= low <= high <= 1.0, row


def test_heldout_answers_in_both_languages(simulation: dict[str, Any]) -> None:
    answers = simulation["summary"]["answers"]
    assert {a["lang"] for a in answers} == {"en", "zh"}
    for answer in answers:
        assert answer["answer"], answer
        assert bool(CJK.search(answer["question"])) == (answer["lang"] == "zh")


def test_site_audit_lists_every_reply_and_detects_an_edit(simulation, capsys) -> None:
    site = sorted((simulation["run"] / "sites").glob("*.toml"))[0]
    audit = AuditLog(load_site_config(site).audit_path)
    records = audit.records()
    received = [r for r in records if r["event"] == "received"]
    replied = [r for r in records if r["event"] == REPLIED]
    assert len(replied) == len(received) > 0
    trained = [r for r in replied if r["message_type"] == "train"]
    assert len(trained) == 4 and all(ARRAYS in r["arrays"] for r in trained)
    assert main(["site", "audit", "--site", str(site)]) == 0
    assert f"{len(replied)} replies sent" in capsys.readouterr().out

    original = audit.path.read_bytes()
    lines = original.splitlines(keepends=True)
    line = next(i for i, r in enumerate(records) if r is trained[0])
    edited = json.loads(lines[line])
    edited["metrics"]["epsilon"] = 0.0  # a round made to look free
    lines[line] = json.dumps(edited, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    audit.path.write_bytes(b"".join(lines))
    try:
        assert main(["site", "audit", "--site", str(site)]) == 2
        out = " ".join(capsys.readouterr().out.split())
        assert f"does not follow line {line + 1} (one of the two was edited)" in out
    finally:
        audit.path.write_bytes(original)


def test_summary_says_what_the_consortium_learned(simulation: dict[str, Any]) -> None:
    """The verdict is the table read: one judged row per task and language (closed-form
    headlines, report BLEU-1), each in exactly one of improved, worse or unsettled."""
    summary = simulation["summary"]
    result = summary["verdict"]
    judged = {f"{r['task']}/{r['lang']}": r for r in judged_rows(summary["table"])}
    assert {row["metric"] for key, row in judged.items() if key.startswith("report/")} == {"bleu1"}
    groups = result["improved"] + result["worse"] + result["unsettled"]
    assert sorted(groups) == sorted(judged)
    for group in result["improved"]:
        assert established(judged[group]) == 1
    assert set(result["chinese_gap"]) == {key.split("/")[0] for key in judged}
    gaps = {gap["task"]: gap for gap in summary["language_gaps"]}  # on the same images
    assert set(gaps) == set(result["chinese_gap"]) == set(result["chinese_gap_interval"])
    for task, gap in gaps.items():
        assert gap["metric"] == judged[f"{task}/en"]["metric"] and gap["records"] > 0
        assert (
            result["chinese_gap"][task] == gap["gap"] == round(gap["chinese"] - gap["english"], 4)
        )
        low, high = result["chinese_gap_interval"][task]
        assert low <= high
    classes = summary["classes"]  # each class's recall, both languages
    assert {row["lang"] for row in classes} == set(LANGS)
    for row in classes:
        assert 0.0 <= row["round 0"] <= 1.0 and 0.0 <= row["final"] <= 1.0
        assert sum(row["answered"].values()) == row["records"] > 0
    assert 0.0 <= result["well_formed"] <= 1.0
    assert Path(summary["heldout_plot"]).read_bytes().startswith(b"\x89PNG")
