"""The real ClientApp in Flower's simulation engine: what a site sends back, and what it refuses.

A tiny ServerApp written here sends each of two synthetic hospitals one train and one evaluate
message (the format of :mod:`protocol` and the coordinator's round config), then a
train message with a wrong fingerprint and one whose round would exceed the privacy budget.
Every reply is searched for anything from the archive: identifiers, file names, free text and
pixel byte runs.
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
from client.config import load_site_config
from protocol import ARRAYS, CONFIG, META, METRICS, STATUS_OK, from_record, to_record
from server.coordinator import initial_arrays
from server.strategy import wait_for_nodes
from shared_model.spec import ModelSpec
from shared_model.tiny import SPEC_FILE
from simulations.runner import run_on_sites, write_site_config
from simulations.synthetic import generate_consortium

STAGE = "instruct"
TRAIN_METRICS = {
    "num-examples",
    "train-loss",
    "steps",
    "seconds",
    "epsilon",
    "delta",
    "noise-multiplier",
}
META_KEYS = {"fingerprint", "stage", "server-round", "status", "reason", "notes", "stage1-hash"}
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
        "seed": 0,
        "reproducible": True,
        "rounds-left": 1,
        "server-round": 1,
    }
    return ConfigRecord({**config, **changes})


def ledgers(configs: list[Path]) -> list[bytes]:
    """The bytes of every site's privacy ledger (empty when none yet)."""
    paths = [load_site_config(c).ledger_path for c in configs]
    return [p.read_bytes() if p.is_file() else b"" for p in paths]


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
        )
        for a in archives
    ]
    spec = ModelSpec.from_toml(tiny_base / SPEC_FILE)
    fingerprint = spec.fingerprint()
    initial = initial_arrays(spec, STAGE, 0, None)
    outcome: dict[str, Any] = {"archives": archives, "configs": configs, "initial": initial}
    phases = {
        "train": (MessageType.TRAIN, round_config(fingerprint)),
        "evaluate": (
            MessageType.EVALUATE,
            ConfigRecord({"stage": STAGE, "fingerprint": fingerprint, "split": "val"}),
        ),
        "wrong-fingerprint": (MessageType.TRAIN, round_config("0" * 16, **{"server-round": 2})),
        "over-budget": (
            MessageType.TRAIN,
            round_config(
                fingerprint,
                **{"server-round": 3, "noise-multiplier": 0.3, "local-steps": 60, "batch-size": 8},
            ),
        ),
    }
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        nodes = wait_for_nodes(grid, len(configs))
        for phase, (message_type, config) in phases.items():
            outcome[f"ledgers-before-{phase}"] = ledgers(configs)
            messages = [
                Message(
                    content=RecordDict({ARRAYS: to_record(initial), CONFIG: config}),
                    dst_node_id=node,
                    message_type=message_type,
                )
                for node in nodes
            ]
            outcome[phase] = list(grid.send_and_receive(messages, timeout=300))
        outcome["ledgers-after"] = ledgers(configs)

    run_on_sites(server_app, configs)
    return outcome


def replies(exchange: dict[str, Any], phase: str) -> list[Message]:
    """The phase's replies, one per site, none of them an error."""
    found = exchange[phase]
    assert len(found) == len(exchange["configs"]), f"{phase}: {len(found)} replies"
    for reply in found:
        assert not reply.has_error(), reply.error
    return found


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
        assert set(metrics) == TRAIN_METRICS
        assert metrics["num-examples"] > 0 and metrics["steps"] == 2
        assert 0 < metrics["epsilon"] < 8 and metrics["noise-multiplier"] == 1.0
    assert all(exchange["ledgers-before-evaluate"]) and not any(exchange["ledgers-before-train"])


def test_metrics_are_numbers_and_meta_holds_only_protocol_fields(exchange: dict[str, Any]) -> None:
    for phase in ("train", "evaluate", "wrong-fingerprint", "over-budget"):
        for reply in replies(exchange, phase):
            content = reply.content
            assert set(content) <= {ARRAYS, METRICS, META}
            for key, value in content[METRICS].items():
                assert re.fullmatch(r"[a-z0-9-]+(/(en|zh)/[a-z0-9_-]+)?", key), key
                assert type(value) in (int, float) and np.isfinite(value), (key, value)
            assert set(content[META]) == META_KEYS
    for reply in replies(exchange, "evaluate"):
        assert ARRAYS not in reply.content and reply.content[METRICS]["num-examples"] > 0
        assert len(reply.content[METRICS]) > 1


def test_wrong_fingerprint_is_refused_and_trains_nothing(exchange: dict[str, Any]) -> None:
    for reply in replies(exchange, "wrong-fingerprint"):
        meta = reply.content[META]
        assert meta["status"] == "refused" and "fingerprint" in meta["reason"]
        assert "0" * 16 in meta["reason"] and ARRAYS not in reply.content
    assert exchange["ledgers-before-over-budget"] == exchange["ledgers-before-wrong-fingerprint"]


def test_round_over_the_budget_is_refused_and_trains_nothing(exchange: dict[str, Any]) -> None:
    for reply in replies(exchange, "over-budget"):
        meta = reply.content[META]
        assert meta["status"] == "refused" and "budget" in meta["reason"], meta["reason"]
        assert ARRAYS not in reply.content
        assert 0 < reply.content[METRICS]["epsilon"] < 8
    assert exchange["ledgers-after"] == exchange["ledgers-before-over-budget"]


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
    every_reply = [
        reply
        for phase in ("train", "evaluate", "wrong-fingerprint", "over-budget")
        for reply in replies(exchange, phase)
    ]
    blob = b"".join(message_to_proto(r).SerializeToString() for r in every_reply)
    texts = []
    for reply in every_reply:
        for name, record in reply.content.items():
            texts += [name, *record.keys()]
            texts += [v for v in record.values() if isinstance(v, str)]
    secrets, runs = set(), []
    for archive, config in zip(exchange["archives"], exchange["configs"], strict=True):
        secrets |= archive_strings(archive)
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
