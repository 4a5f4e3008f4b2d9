"""The full-shape round: Qwen2-VL-2B-Instruct's architecture through both stages under DP.

Two virtual hospitals (a DICOM radiograph and a NIfTI CT volume per patient) in Flower's
simulation engine, one DP step per stage, stage 1 merged into the base before stage 2, the
export, and ``fedumit infer`` on a DICOM and a NIfTI input. The base is the seeded random-init
full-shape one (``fedumit model full-shape``): answers are noise; shapes, formats and files
must be right. Images are fitted to a 56-pixel canvas here (4 visual tokens, 4 slices a volume)
so that the 2.2 B-parameter steps fit the CPU; the widths and depths are the real ones.

Minutes and about 14 GB of memory: skipped unless ``FEDUMIT_FULL_SHAPE=1``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import tomli_w
from transformers import AutoConfig

from fedumit.cli import main
from shared_model.full_shape import FullShape, ensure_full_shape_base, full_shape_spec
from simulations.imaging_writers import write_dicom_image, write_nifti
from simulations.runner import simulate, write_site_config
from tests.archive_fixtures import SPACING, ct_volume, write_manifest, xray

pytestmark = pytest.mark.full_shape
QUESTION = "Is there a bright block?"


def hospital(root: Path, name: str) -> Path:
    """An archive of three patients, each with a DICOM radiograph and a NIfTI CT volume."""
    archive = root / name / "archive"
    records = []
    for n in range(3):
        patient = f"{name}-p{n}"
        write_dicom_image(
            archive / patient / "cr.dcm", xray(), patient_id=patient, modality="CR",
            window=(2000.0, 4000.0),
        )  # fmt: skip
        write_nifti(archive / patient / "ct.nii.gz", ct_volume(), spacing=SPACING)
        common = {"patient_id": patient, "split": "train", "lang": "en"}
        records += [
            {**common, "id": f"{patient}-cr", "images": [f"{patient}/cr.dcm"], "task": "vqa",
             "question": QUESTION, "options": ["no", "yes"], "answer": "yes"},
            {**common, "id": f"{patient}-ct", "images": [f"{patient}/ct.nii.gz"],
             "task": "classification", "modality": "CT", "question": QUESTION,
             "options": ["no", "yes"], "label": 0},
        ]  # fmt: skip
    write_manifest(archive, records)
    return archive


@pytest.fixture(scope="module")
def round_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("full-shape")
    base = ensure_full_shape_base(progress=False)
    spec_file = full_shape_spec(base, canvas=56, volume_slices=4).write_toml(root / "spec.toml")
    sites = []
    for name in ("north", "south"):
        path = write_site_config(
            root / "sites" / f"{name}.toml",
            name=name,
            archive=hospital(root, name),
            work_dir=root / name / "work",
            model_spec=spec_file,
            replayable_noise_seed=0,
        )
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        data["site"]["precision"] = "bfloat16"  # two 2.2 B bases in one CPU process: 4.4 GB each
        path.write_text(tomli_w.dumps(data), encoding="utf-8")
        sites.append(path)
    overrides = {
        "run-dir": str(root / "runs"),
        "run-id": "full-shape",
        "model-spec": str(spec_file),
        "min-sites": 2,
        "min-available-sites": 2,
        "eval-every": 0,
        "eval-at-start": False,
        "align.rounds": 1,
        "align.local-steps": 1,
        "align.batch-size": 2,
        "instruct.rounds": 1,
        "instruct.local-steps": 1,
        "instruct.batch-size": 2,
        "physical-batch-size": 2,
    }
    folder = simulate(sites, overrides)
    return {"root": root, "run": folder.root, "base": base, "sites": sites}


def test_both_stages_ran_with_dp_on_both_sites(round_result: dict) -> None:
    run = round_result["run"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "sites" in r]
    assert [(r["stage"], r["round"]) for r in trained] == [("align", 1), ("instruct", 1)]
    for record in trained:
        assert sorted(record["sites"]) == ["north", "south"] and not record["rejected"]
        assert sorted(record["epsilon"]) == ["north", "south"]
        assert all(eps > 0 for eps in record["epsilon"].values())
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.safetensors"))
    assert checkpoints == ["align-round-0001.safetensors", "instruct-round-0001.safetensors"]


def test_export_has_the_full_shape_and_both_adapters(round_result: dict) -> None:
    export = round_result["run"] / "export"
    config = AutoConfig.from_pretrained(export)
    shape = FullShape()
    assert config.text_config.hidden_size == shape.text_hidden
    assert config.text_config.num_hidden_layers == shape.text_layers
    assert config.text_config.vocab_size == shape.vocab_size
    assert config.vision_config.depth == shape.vision_depth
    assert config.vision_config.embed_dim == shape.vision_embed
    for stage in ("align", "instruct"):
        adapter = json.loads((export / "adapters" / stage / "adapter_config.json").read_text())
        assert adapter["r"] == 16
    info = json.loads((export / "fedumit.json").read_text())
    assert info["canvas"] == 56 and info["stages"] == ["align", "instruct"]


@pytest.mark.parametrize(
    ("image", "extra"),
    [("cr.dcm", ["--task", "vqa", "--options", "no,yes"]),
     ("ct.nii.gz", ["--task", "classification", "--options", "no,yes", "--modality", "CT"])],
    ids=["dicom", "nifti"],
)  # fmt: skip
def test_infer_answers_a_dicom_and_a_nifti(round_result: dict, image: str, extra, capsys) -> None:
    source = round_result["root"] / "north" / "archive" / "north-p0" / image
    code = main(
        ["infer", "--model", str(round_result["run"] / "export"), "--image", str(source),
         "--question", QUESTION, "--json", "--max-new-tokens", "4", *extra]
    )  # fmt: skip
    assert code == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(answer["answer"], str)
