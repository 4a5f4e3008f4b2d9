"""The real ClientApp in Flower's simulation engine: what a site sends back, and what it refuses.

A tiny ServerApp written here plays an honest-but-curious coordinator against two synthetic
hospitals: the first draws its randomness from the operating system, as every deployed site
does; the second opts in to replayable randomness in its own config, as simulations do. The
server sends the same train message twice and once more with another seed, evaluations (on
``val``, on ``train``, beyond the site's cap), a wrong fingerprint, a round over the budget, a
NaN learning rate, and a round after the ledgers were torn. Every reply is searched for anything
from the archive (identifiers, file names, free text, pixel byte runs) and for local detail
(paths, exception text), and each site's audit log must hold every message and reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.serde import message_to_proto
from flwr.serverapp import Grid, ServerApp

from client.archive.cache import PixelCache
from client.audit import REPLIED, AuditLog
from client.config import load_site_config
from fedumit.cli import main as fedumit
from protocol import (
    ARRAYS,
    CONFIG,
    META,
    META_KEYS,
    METRICS,
    STATUS_OK,
    TRAIN_METRIC_KEYS,
    Refusal,
    arrays_sha256,
    from_record,
    to_record,
)
from server.coordinator import initial_arrays
from server.strategy import wait_for_nodes
from shared_model.spec import ModelSpec
from shared_model.tiny import SPEC_FILE
from simulations.runner import run_on_sites, write_site_config
from simulations.synthetic import generate_consortium

STAGE = "instruct"
TRAIN_METRICS = set(TRAIN_METRIC_KEYS) - {"train-loss"}  # the loss only where a policy allows it
SECURE, REPLAYABLE = 0, 1  # the sites, in node order
PIXEL_RUN = 16  # bytes; a run this long from an image found in a reply counts as a leak
RUNS_PER_IMAGE = 12


def round_config(fingerprint: str, **changes: Any) -> ConfigRecord:
    """A train config as the coordinator sends it (``_round_config``), with small local work."""
    config = {
        "stage": STAGE,
        "fingerprint": fingerprint,
        "run-id": "test-run",
        "lr": 1e-2,
        "local-steps": 2,
        "local-epochs": 0.0,
        "batch-size": 2,
        "dp": True,
        "noise-multiplier": 1.0,
        "max-grad-norm": 1.0,
        "physical-batch-size": 4,
        "proximal-mu": 0.0,
        "seed": 0,  # what an older coordinator sent: a site ignores it
        "reproducible": True,
        "rounds-left": 1,
        "server-round": 1,
    }
    return ConfigRecord({**config, **changes})


def ledgers(configs: list[Path]) -> list[bytes]:
    """The bytes of every site's privacy ledger (empty when none yet)."""
    paths = [load_site_config(c).ledger_path for c in configs]
    return [p.read_bytes() if p.is_file() else b"" for p in paths]


def evaluate_config(fingerprint: str, **changes: Any) -> ConfigRecord:
    """An evaluate config as the coordinator sends it."""
    config = {"stage": STAGE, "fingerprint": fingerprint, "split": "val", "run-id": "test-run"}
    return ConfigRecord({**config, **changes})


TORN = b'{"kind":"reserve","run_id":'


def tear(configs: list[Path]) -> None:
    """Cut every site's ledger in the middle of a line, as a crash while writing would."""
    for config in configs:
        with load_site_config(config).ledger_path.open("ab") as handle:
            handle.write(TORN)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> dict[str, Any]:
    """Run the simulation once; keep every phase's replies and the ledgers between phases."""
    root = tmp_path_factory.mktemp("client-app")
    archives = generate_consortium(root / "archives", n_sites=2, patients=6, seed=3)
    configs = [
        write_site_config(
            root / "sites" / f"{a.name}.toml",
            name=a.name,
            archive=a,
            work_dir=root / "work" / a.name,
            model_spec=tiny_base / SPEC_FILE,
            max_epsilon=50.0,  # room for four small rounds; one large round still exceeds it
            replayable_noise_seed=7 if index == REPLAYABLE else None,
        )
        for index, a in enumerate(archives)
    ]
    for index, config in enumerate(configs):  # the replayable site discloses small groups
        text = config.read_text(encoding="utf-8").replace(
            "[policy]\n", f"[policy]\nmin_group_size = {1 if index else 20}\n"
        )
        config.write_text(text + "max_evaluations_per_run = 1\n", encoding="utf-8")
    spec = ModelSpec.from_toml(tiny_base / SPEC_FILE)
    fingerprint = spec.fingerprint()
    initial = initial_arrays(spec, STAGE, 0, None)
    outcome: dict[str, Any] = {"archives": archives, "configs": configs, "initial": initial}
    phases = {
        "train": (MessageType.TRAIN, round_config(fingerprint)),
        "train-again": (MessageType.TRAIN, round_config(fingerprint)),
        "train-other-seed": (MessageType.TRAIN, round_config(fingerprint, seed=12345)),
        "evaluate": (MessageType.EVALUATE, evaluate_config(fingerprint)),
        "evaluate-again": (MessageType.EVALUATE, evaluate_config(fingerprint)),
        "evaluate-train": (MessageType.EVALUATE, evaluate_config(fingerprint, split="train")),
        "wrong-fingerprint": (MessageType.TRAIN, round_config("0" * 16, **{"server-round": 2})),
        "over-budget": (
            MessageType.TRAIN,
            round_config(
                fingerprint,
                **{"server-round": 3, "noise-multiplier": 0.3, "local-steps": 60, "batch-size": 8},
            ),
        ),
        "nan-lr": (MessageType.TRAIN, round_config(fingerprint, lr=float("nan"))),
        "torn-ledger": (MessageType.TRAIN, round_config(fingerprint, **{"server-round": 4})),
    }
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        nodes = wait_for_nodes(grid, len(configs))
        for phase, (message_type, config) in phases.items():
            if phase == "torn-ledger":
                tear(configs)
            outcome[f"ledgers-before-{phase}"] = ledgers(configs)
            messages = [
                Message(
                    content=RecordDict({ARRAYS: to_record(initial), CONFIG: config}),
                    dst_node_id=node,
                    message_type=message_type,
                )
                for node in nodes
            ]
            received = list(grid.send_and_receive(messages, timeout=300))
            order = {message.metadata.message_id: i for i, message in enumerate(messages)}
            received.sort(key=lambda reply: order[reply.metadata.reply_to_message_id])
            outcome[phase] = received
        outcome["ledgers-after"] = ledgers(configs)

    run_on_sites(server_app, configs)
    return outcome


def replies(exchange: dict[str, Any], phase: str) -> list[Message]:
    """The phase's replies, one per site in node order, none of them a Flower error."""
    found = exchange[phase]
    assert len(found) == len(exchange["configs"]), f"{phase}: {len(found)} replies"
    for reply in found:
        assert not reply.has_error(), reply.error
    return found


def by_site(exchange: dict[str, Any], phase: str) -> dict[int, Message]:
    """The phase's replies keyed by site (``SECURE``, ``REPLAYABLE``), found through the
    sites' audit logs: each holds the SHA-256 of the arrays it sent."""
    sent = {}
    for index, config in enumerate(exchange["configs"]):
        for record in AuditLog(load_site_config(config).audit_path).records():
            if record.get("event") == REPLIED and ARRAYS in record["arrays"]:
                sent[record["arrays"][ARRAYS]["sha256"]] = index
    keyed = {}
    for reply in replies(exchange, phase):
        keyed[sent[arrays_sha256(from_record(reply.content[ARRAYS]))]] = reply
    assert sorted(keyed) == [SECURE, REPLAYABLE]
    return keyed


def refusal_codes(exchange: dict[str, Any], phase: str) -> list[str]:
    """Each site's refusal code in ``phase`` (every reply must be a refusal without arrays)."""
    codes = []
    for reply in replies(exchange, phase):
        meta = reply.content[META]
        assert meta["status"] == "refused" and ARRAYS not in reply.content
        codes.append(meta["reason"])
    return codes


def test_train_reply_carries_an_updated_adapter(exchange: dict[str, Any]) -> None:
    initial = exchange["initial"]
    for reply in replies(exchange, "train"):
        assert reply.content[META]["status"] == STATUS_OK, reply.content[META]["reason"]
        arrays = from_record(reply.content[ARRAYS])
        assert list(arrays) == list(initial)
        for name, array in arrays.items():
            assert array.shape == initial[name].shape and array.dtype == initial[name].dtype
        changed = [n for n in arrays if not np.array_equal(arrays[n], initial[n])]
        assert len(changed) > len(arrays) // 2
        metrics = reply.content[METRICS]
        assert set(metrics) == TRAIN_METRICS  # no train-loss: the policy default withholds it
        assert metrics["num-examples"] % 10 == 0 and metrics["steps"] == 2
        assert 0 < metrics["epsilon"] < 50 and metrics["noise-multiplier"] == 1.0
    assert all(exchange["ledgers-before-evaluate"])


def test_identical_messages_get_noise_the_server_cannot_replay(exchange: dict[str, Any]) -> None:
    """The server knows every value it sent; a deployed site's update still differs between two
    identical messages, so sampling and noise are not a function of the message."""
    first, again = by_site(exchange, "train"), by_site(exchange, "train-again")
    secure_first = from_record(first[SECURE].content[ARRAYS])
    secure_again = from_record(again[SECURE].content[ARRAYS])
    assert any(not np.array_equal(secure_first[n], secure_again[n]) for n in secure_first)


def test_only_the_sites_own_opt_in_makes_noise_replayable(exchange: dict[str, Any]) -> None:
    """A site whose config opts in repeats its update for the same round; the seed in the
    server's message changes nothing."""
    runs = [by_site(exchange, phase)[REPLAYABLE] for phase in ("train", "train-again")]
    runs.append(by_site(exchange, "train-other-seed")[REPLAYABLE])
    arrays = [from_record(run.content[ARRAYS]) for run in runs]
    for other in arrays[1:]:
        assert all(np.array_equal(arrays[0][n], other[n]) for n in arrays[0])


def test_server_seed_and_unknown_keys_are_ignored_and_audited(exchange: dict[str, Any]) -> None:
    for config in exchange["configs"]:
        received = [
            r
            for r in AuditLog(load_site_config(config).audit_path).records()
            if r.get("event") == "received" and r["message_type"] == "train"
        ]
        assert received and all(r["ignored_keys"] == ["reproducible", "seed"] for r in received)
        assert {r["config"]["seed"] for r in received} == {0, 12345}


def test_metrics_are_numbers_and_meta_holds_only_protocol_fields(exchange: dict[str, Any]) -> None:
    for phase in PHASES:
        for reply in replies(exchange, phase):
            content = reply.content
            assert set(content) <= {ARRAYS, METRICS, META}
            for key, value in content[METRICS].items():
                assert re.fullmatch(r"[a-z0-9-]+(/(en|zh)/[a-z0-9_-]+)?", key), key
                assert type(value) in (int, float) and np.isfinite(value), (key, value)
            assert set(content[META]) == set(META_KEYS)
            reason = content[META]["reason"]
            assert reason == "" or reason in {code.value for code in Refusal}, reason


def test_evaluation_discloses_only_groups_above_the_minimum(exchange: dict[str, Any]) -> None:
    evaluated = replies(exchange, "evaluate")
    disclosed = [dict(reply.content[METRICS]) for reply in evaluated]
    small = [d for d in disclosed if set(d) == {"num-examples"}]
    shown = [d for d in disclosed if len(d) > 1]
    assert len(small) == 1 and len(shown) == 1  # minimum 20 withholds every group; 1 shows them
    for key, value in shown[0].items():
        assert round(value, 2) == value, (key, value)  # scores rounded to the policy's decimals
    for reply in evaluated:
        assert reply.content[META]["status"] == STATUS_OK and ARRAYS not in reply.content


def test_evaluation_on_train_and_beyond_the_cap_is_refused(exchange: dict[str, Any]) -> None:
    assert refusal_codes(exchange, "evaluate-train") == [Refusal.POLICY_SPLIT] * 2
    assert refusal_codes(exchange, "evaluate-again") == [Refusal.POLICY_EVALUATION_CAP] * 2


def test_wrong_fingerprint_is_refused_with_a_code_and_trains_nothing(
    exchange: dict[str, Any],
) -> None:
    assert refusal_codes(exchange, "wrong-fingerprint") == [Refusal.FINGERPRINT] * 2
    assert exchange["ledgers-before-over-budget"] == exchange["ledgers-before-wrong-fingerprint"]


def test_round_over_the_budget_is_refused_and_trains_nothing(exchange: dict[str, Any]) -> None:
    assert refusal_codes(exchange, "over-budget") == [Refusal.BUDGET_EXCEEDED] * 2
    for reply in replies(exchange, "over-budget"):
        assert 0 < reply.content[METRICS]["epsilon"] < 50
    assert exchange["ledgers-before-nan-lr"] == exchange["ledgers-before-over-budget"]


def test_an_unexpected_error_sends_a_generic_code_and_over_counts(
    exchange: dict[str, Any],
) -> None:
    assert refusal_codes(exchange, "nan-lr") == [Refusal.INTERNAL_ERROR] * 2
    for config in exchange["configs"]:
        site = load_site_config(config)
        assert "Invalid learning rate" in site.log_path.read_text(encoding="utf-8")
    after, before = exchange["ledgers-before-torn-ledger"], exchange["ledgers-before-nan-lr"]
    for torn, earlier in zip(after, before, strict=True):
        added = torn[len(earlier) :].split(b"\n")
        assert torn.startswith(earlier) and len(added) == 2  # one line, then the torn tail
        assert json.loads(added[0])["kind"] == "reserve"  # reserved, never settled


def test_a_torn_ledger_sends_a_code_and_no_path(exchange: dict[str, Any]) -> None:
    assert refusal_codes(exchange, "torn-ledger") == [Refusal.LEDGER_DAMAGED] * 2
    assert exchange["ledgers-after"] == exchange["ledgers-before-torn-ledger"]


def test_the_audit_log_holds_every_message_and_reply(exchange: dict[str, Any], capsys) -> None:
    for config in exchange["configs"]:
        audit = AuditLog(load_site_config(config).audit_path)
        records = audit.records()
        events = [r["event"] for r in records]
        assert events == ["created"] + ["received", "replied"] * len(PHASES)
        replied = [r for r in records if r["event"] == REPLIED]
        assert [r["meta"]["status"] for r in replied].count(STATUS_OK) == 4
        assert fedumit(["site", "audit", "--site", str(config)]) == 0
        assert f"{len(records)} records, chain verified" in capsys.readouterr().out


PHASES = (
    "train",
    "train-again",
    "train-other-seed",
    "evaluate",
    "evaluate-again",
    "evaluate-train",
    "wrong-fingerprint",
    "over-budget",
    "nan-lr",
    "torn-ledger",
)


def archive_strings(archive: Path) -> set[str]:
    """Every identifier, path and text of the manifest, and the DICOM headers' identifiers."""
    found = {str(archive)}
    for line in (archive / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for key in ("id", "patient_id", "text", "question", "answer", "report", "target"):
            if key in record:
                found.add(str(record[key]))
        found.update(record.get("options", []))
        for image in record["images"]:
            found.update({image, Path(image).name})
    for file in archive.rglob("*.dcm"):
        dataset = pydicom.dcmread(file, stop_before_pixels=True)
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "SOPInstanceUID"):
            found.add(str(dataset.get(keyword)))
        found.add(file.name)
    return {s for s in found if len(s.encode()) >= 4}


def pixel_runs(data: bytes) -> Iterator[bytes]:
    """Up to ``RUNS_PER_IMAGE`` byte runs spread over ``data`` that are not near-constant (a
    run of zeros could match zero-initialised arrays by chance)."""
    step = max(1, (len(data) - PIXEL_RUN) // (RUNS_PER_IMAGE * 4))
    runs = 0
    for start in range(0, len(data) - PIXEL_RUN, step):
        run = data[start : start + PIXEL_RUN]
        if len(set(run)) >= 6:
            yield run
            runs += 1
            if runs == RUNS_PER_IMAGE:
                return


def archive_pixels(archive: Path, work_dir: Path) -> list[bytes]:
    """Stored pixel bytes of every DICOM and NIfTI file, and the cached canvas pixels."""
    import nibabel as nib

    images = [pydicom.dcmread(f).PixelData for f in archive.rglob("*.dcm")]
    images += [np.asarray(nib.load(f).dataobj).tobytes() for f in archive.rglob("*.nii.gz")]
    entries = list(work_dir.rglob("*.pixels"))
    assert entries, f"no cached pixels under {work_dir}: the cache layout changed"
    for entry in entries:
        cached = PixelCache(entry.parent.parent, {}).get(entry.stem)
        assert cached is not None, f"unreadable cache entry {entry}"
        images.append(cached.pixels.tobytes())
    return images


def test_no_archive_content_leaves_the_site(exchange: dict[str, Any]) -> None:
    every_reply = [reply for phase in PHASES for reply in replies(exchange, phase)]
    blob = b"".join(message_to_proto(r).SerializeToString() for r in every_reply)
    texts = []
    for reply in every_reply:
        for name, record in reply.content.items():
            texts += [name, *record.keys()]
            texts += [v for v in record.values() if isinstance(v, str)]
    secrets, runs = set(), []
    for archive, config in zip(exchange["archives"], exchange["configs"], strict=True):
        secrets |= archive_strings(archive)
        secrets |= {str(config), str(load_site_config(config).work_dir), "Traceback", "Error"}
        for image in archive_pixels(archive, load_site_config(config).work_dir):
            runs += list(pixel_runs(image))
    assert len(secrets) > 100 and len(runs) > 100
    planted = Message(
        content=RecordDict(
            {
                CONFIG: ConfigRecord({"x": min(secrets)}),
                ARRAYS: to_record({"x": np.frombuffer(runs[0], np.uint8)}),
            }
        ),
        dst_node_id=0,
        message_type=MessageType.TRAIN,
    )
    control = message_to_proto(planted).SerializeToString()
    assert min(secrets).encode() in control and runs[0] in control  # the search would see one
    leaked = [s for s in secrets if s.encode() in blob or any(s in t for t in texts)]
    assert not leaked, leaked[:5]
    assert not [r for r in runs if r in blob]
