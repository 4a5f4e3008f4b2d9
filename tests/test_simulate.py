"""``fedumit simulate`` end to end, on a smaller configuration of the same code as the default.

Three synthetic hospitals (one mostly Chinese) run ``align`` then ``instruct`` with DP-SGD in
Flower's simulation engine; the run is exported and the exported model is scored on the pooled
held-out test split against the base (round 0). The privacy budget is generous so that a few
minutes of training show on the closed-form tasks; the DP path (per-patient clipping, noise,
ledger) is the one the default run takes.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from transformers import Qwen2VLForConditionalGeneration

from client.audit import REPLIED, AuditLog
from client.config import load_site_config
from client.privacy import PrivacyLedger
from fedumit.cli import main
from protocol import ARRAYS
from simulations.report import closed_form, improved

CJK = re.compile(r"[\u4e00-\u9fff：]")
ARGS = [
    "--sites", "3",
    "--patients", "30",
    "--align-rounds", "1",
    "--align-steps", "3",
    "--instruct-rounds", "2",
    "--instruct-steps", "60",
    "--instruct-lr", "4e-3",
    "--eval-every", "0",
    "--epsilon", "1000",
]  # fmt: skip


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> dict[str, Any]:
    """One ``fedumit simulate`` run (the tiny base copied in, as the command would build it)."""
    out = tmp_path_factory.mktemp("simulate")
    shutil.copytree(tiny_base, out / "tiny-base")
    code = main(["simulate", "--out", str(out), *ARGS])
    summaries = list((out / "runs").glob("*/summary.json"))
    assert code == 0 and len(summaries) == 1, f"exit {code}, summaries {summaries}"
    summary = json.loads(summaries[0].read_text(encoding="utf-8"))
    return {"out": out, "run": Path(summary["run"]), "summary": summary}


def test_both_stages_ran_with_dp_and_were_checkpointed(simulation: dict[str, Any]) -> None:
    run = simulation["run"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [(r["stage"], r["round"]) for r in records if "train_loss" in r]
    assert trained == [("align", 1), ("instruct", 1), ("instruct", 2)]
    for record in records:
        if "train_loss" in record:
            assert len(record["sites"]) == 3 and not record["rejected"]
            assert all(0 < eps < 1000 for eps in record["epsilon"].values())
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.safetensors"))
    assert checkpoints == [
        "align-round-0001.safetensors",
        "instruct-round-0001.safetensors",
        "instruct-round-0002.safetensors",
    ]
    assert {p.name for p in (run / "plots").glob("*.png")} >= {"training.png", "privacy.png"}
    for site in (run / "sites").glob("*.toml"):
        ledger = PrivacyLedger(load_site_config(site).ledger_path).entries()
        assert [(e.stage, e.server_round) for e in ledger] == trained


def test_export_loads_with_plain_transformers(simulation: dict[str, Any]) -> None:
    export = Path(simulation["summary"]["export"])
    model = Qwen2VLForConditionalGeneration.from_pretrained(export)
    assert model.config.model_type == "qwen2_vl"
    assert (export / "adapters" / "align").is_dir() and (export / "adapters" / "instruct").is_dir()
    card = (export / "README.md").read_text(encoding="utf-8")
    assert "epsilon" in card.lower() and simulation["run"].name in card


def test_closed_form_tasks_beat_round_0_in_both_languages(simulation: dict[str, Any]) -> None:
    rows = closed_form(simulation["summary"]["table"])
    for lang in ("en", "zh"):
        mine = [r for r in rows if r["lang"] == lang]
        assert mine, f"no closed-form rows for {lang}"
        better = [f"{r['task']}/{r['metric']}" for r in mine if improved(r, "round 0", "final")]
        assert better, f"{lang}: nothing improved over round 0: {mine}"


def test_table_rows_say_which_is_the_headline(simulation: dict[str, Any]) -> None:
    table = simulation["summary"]["table"]
    groups = {(r["task"], r["lang"]) for r in table}
    headlines = {(r["task"], r["lang"]) for r in table if r["headline"]}
    shares = {(r["task"], r["lang"]) for r in table if r["metric"] == "well_formed"}
    assert all(isinstance(r["headline"], bool) for r in table)
    assert groups == shares and headlines <= groups
    assert sum(r["headline"] for r in table) == len(headlines)  # one per task and language


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
    assert len(trained) == 3 and all(ARRAYS in r["arrays"] for r in trained)
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
