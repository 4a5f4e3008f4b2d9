"""Export of a trained run and ``fedumit infer``: plain transformers loads the export and answers
exactly as ``fedumit infer`` does, on a PNG, a DICOM and a NIfTI volume, in English and Chinese."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from client.archive import load_site_samples
from client.config import load_site_config
from client.trainer import LocalTrainer, TrainConfig
from fedumit.cli import main
from fedumit.infer import QuestionError, answer_image, read_for_model
from server.checkpoints import Checkpoint, save_checkpoint
from server.run_folder import RunFolder
from shared_model.export import read_export_info
from shared_model.loading import stage_model
from shared_model.sample import Geometry
from shared_model.tasks import INSTRUCT_TASKS, get_task
from shared_model.tasks.text import has_cjk
from simulations.imaging_writers import write_dicom_image, write_nifti
from tests.archive_fixtures import SPACING, ct_volume, site_toml, write_manifest, xray
from tests.conftest import lesion_image

SIDE = {"en": ("Which side is the lesion on?", ["left", "right"])}
SIDE["zh"] = ("病灶在哪一侧？", ["左侧", "右侧"])
BLOCK = ("Is there a bright block?", ["no", "yes"])
BOX = [50, 20, 60, 30]  # the bright block of ``xray()``, in source pixels
MAX_NEW_TOKENS = 16


def record(rid: str, patient: str, image: str, task: str, lang: str, **fields) -> dict:
    return {
        "id": rid,
        "patient_id": patient,
        "task": task,
        "lang": lang,
        "split": "train",
        "images": [image],
        **fields,
    }


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PNG, a 2D DICOM and a CT NIfTI volume; VQA in both languages, classification, boxes."""
    root = tmp_path_factory.mktemp("hospital") / "archive"
    (root / "p1").mkdir(parents=True)
    Image.fromarray(lesion_image("left")).save(root / "p1" / "lesion.png")
    write_dicom_image(
        root / "p1" / "cr.dcm", xray(), patient_id="P1", modality="CR", window=(2000.0, 4000.0)
    )
    write_nifti(root / "p2" / "ct.nii.gz", ct_volume(), spacing=SPACING)
    side = {lang: {"question": q, "options": o} for lang, (q, o) in SIDE.items()}
    write_manifest(
        root,
        [
            record("a", "P1", "p1/lesion.png", "vqa", "en", answer="left", **side["en"]),
            record("b", "P1", "p1/lesion.png", "vqa", "zh", answer="左侧", **side["zh"]),
            record("c", "P1", "p1/cr.dcm", "vqa", "zh", answer="右侧", **side["zh"]),
            record(
                "d", "P1", "p1/cr.dcm", "detection", "en", target="nodule", boxes=[[50, 20, 60, 30]]
            ),
            record(
                "e",
                "P2",
                "p2/ct.nii.gz",
                "classification",
                "en",
                modality="CT",
                question=BLOCK[0],
                options=BLOCK[1],
                label=1,
            ),
        ],
    )
    return root


@pytest.fixture(scope="module")
def exported(tiny_spec, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a real ``align`` adapter and a few DP-SGD ``instruct`` steps, exported."""
    root = tmp_path_factory.mktemp("coordinator")
    fingerprint = tiny_spec.fingerprint()
    run = RunFolder(root / "runs" / "run-test").create(
        {
            "run": {"aggregation": "fedavg", "dp": True},
            "model": tiny_spec.to_dict(),
            "fingerprint": fingerprint,
        }
    )
    torch.manual_seed(0)
    align_adapter, _ = stage_model(tiny_spec, "align")
    rng = np.random.default_rng(0)
    align = {
        name: (value + rng.normal(0, 0.01, value.shape)).astype(np.float32)
        for name, value in align_adapter.arrays().items()
    }
    save_checkpoint(run.checkpoints, Checkpoint("align", 1, fingerprint, run.run_id, align, {}))

    site = load_site_config(site_toml(root, archive))
    samples, report = load_site_samples(
        site, canvas=tiny_spec.canvas, slices=tiny_spec.volume_slices, tasks=INSTRUCT_TASKS
    )
    assert report.usable == 5, report.problems
    adapter, processor = stage_model(tiny_spec, "instruct", align_arrays=align)
    trained = LocalTrainer(adapter, processor, tiny_spec, torch.device("cpu")).train(
        samples,
        [s.patient_id for s in samples],
        TrainConfig(steps=3, sample_rate=1.0, learning_rate=1e-3, noise_multiplier=0.3),
        progress=False,
    )
    arrays = trained.arrays
    save_checkpoint(run.checkpoints, Checkpoint("instruct", 1, fingerprint, run.run_id, arrays, {}))
    run.append_metrics({"stage": "instruct", "round": 1, "sites": ["1"], "epsilon": {"1": 0.5}})
    out = root / "export"
    assert str(out) in run_cli("export", "--run", str(run.root), "--out", str(out))
    return out


def limit() -> list[str]:
    return ["--max-new-tokens", str(MAX_NEW_TOKENS)]


def run_cli(*args: str) -> str:
    """Run ``fedumit ARGS`` in this process; what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(list(args)) == 0
    return printed.getvalue()


def infer(model: Path, *args: str) -> dict:
    """``fedumit infer --json ...``: the JSON it prints."""
    printed = run_cli("infer", "--model", str(model), "--json", *limit(), *args)
    return json.loads(printed.strip().splitlines()[-1])


CASES = [  # (file, task, lang, (question, options))
    ("p1/lesion.png", "vqa", "en", SIDE["en"]),
    ("p1/lesion.png", "vqa", "zh", SIDE["zh"]),
    ("p1/cr.dcm", "vqa", "zh", SIDE["zh"]),
    ("p2/ct.nii.gz", "classification", "en", BLOCK),
]


@pytest.fixture(scope="module")
def answers(exported: Path, archive: Path) -> list[dict]:
    """``fedumit infer`` on every case."""
    return [
        infer(
            exported,
            *("--image", str(archive / image), "--task", task, "--lang", lang),
            *("--question", question, "--options", ",".join(options)),
        )
        for image, task, lang, (question, options) in CASES
    ]


PLAIN = """
import json, sys
import numpy as np, torch
from PIL import Image
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

directory, jobs = sys.argv[1], json.load(open(sys.argv[2], encoding="utf-8"))
model = Qwen2VLForConditionalGeneration.from_pretrained(directory).eval()
processor = AutoProcessor.from_pretrained(directory)
answers = []
for job in jobs:
    path = job["image"]
    pixels = np.load(path) if path.endswith(".npy") else np.asarray(Image.open(path).convert("RGB"))
    kind = "video" if pixels.ndim == 4 else "image"
    chat = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": job["prompt"]}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], **{kind + "s": [pixels]}, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=job["max_new_tokens"], do_sample=False)
    new = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])
    answers.append(new.split("<|im_end|>")[0].strip())
ours = {m.split(".")[0] for m in sys.modules} & {"fedumit", "shared_model", "client", "server"}
assert not ours, ours
print(json.dumps(answers, ensure_ascii=False))
"""


def plain_transformers_answers(exported: Path, archive: Path, tmp_path: Path) -> list[str]:
    """Every case asked through transformers alone, in a fresh interpreter.

    PNG files are opened with Pillow; DICOM and NIfTI pixels (which transformers cannot read)
    come as the canvas-ready arrays the sites' readers make.
    """
    info = read_export_info(exported)
    jobs = []
    for index, (image, task, lang, (question, options)) in enumerate(CASES):
        path = archive / image
        if path.suffix != ".png":
            pixels, _ = read_for_model(path, info["canvas"], info["volume_slices"])
            path = tmp_path / f"pixels-{index}.npy"
            np.save(path, pixels)
        fields = {"question": question, "options": options}
        prompt = get_task(task).prompt(fields, lang)
        jobs.append({"image": str(path), "prompt": prompt, "max_new_tokens": MAX_NEW_TOKENS})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs, ensure_ascii=False), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-c", PLAIN, str(exported), str(tmp_path / "jobs.json")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_plain_transformers_gives_the_answers_of_fedumit_infer(
    exported: Path, archive: Path, answers: list[dict], tmp_path: Path
) -> None:
    assert (exported / "adapters" / "instruct" / "adapter_config.json").is_file()
    assert "run-test" in (exported / "README.md").read_text(encoding="utf-8")
    plain = plain_transformers_answers(exported, archive, tmp_path)
    assert plain == [a["answer"] for a in answers]
    assert all(a["answer"] for a in answers)


def test_each_language_is_answered_in_its_own_language(answers: list[dict]) -> None:
    for (_, _, lang, (_, options)), answer in zip(CASES, answers, strict=True):
        text = answer["answer"]
        if lang == "zh":
            assert has_cjk(text) or "：" in text, text
        else:
            assert not has_cjk(text) and "：" not in text, text
        parsed = answer["parsed"]
        assert answer["well_formed"] == (parsed is not None)
        if parsed is not None:
            assert parsed["option"] == options[parsed["index"]] == answer["lenient"]["option"]


def test_manifest_mode_writes_predictions_and_metrics(
    exported: Path, archive: Path, answers: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "predictions.jsonl"
    manifest = archive / "manifest.jsonl"
    printed = run_cli(
        *("infer", "--model", str(exported), "--manifest", str(manifest), "--out", str(out)),
        *("--batch-size", "1", *limit()),
    )
    predictions = {p["id"]: p for p in map(json.loads, out.read_text("utf-8").splitlines())}
    assert sorted(predictions) == ["a", "b", "c", "d", "e"]
    assert predictions["a"]["answer"] == answers[0]["answer"]  # same reader, same prompt
    assert predictions["c"]["answer"] == answers[2]["answer"]
    assert predictions["e"]["answer"] == answers[3]["answer"]
    assert predictions["e"]["reference"] == {"index": 1, "option": "yes"}
    np.testing.assert_allclose(predictions["d"]["reference"], [BOX], atol=0.1)
    metrics = json.loads((tmp_path / "predictions-metrics.json").read_text("utf-8"))
    assert metrics["vqa/zh/count"] == 2 and metrics["vqa/en/count"] == 1
    assert metrics["detection/en/count"] == 1 and "classification/en/accuracy" in metrics
    assert {"classification/en/accuracy_lenient", "vqa/zh/well_formed"} <= set(metrics)
    assert all(isinstance(p["well_formed"], bool) and "lenient" in p for p in predictions.values())
    assert "vqa/zh/closed_accuracy" in printed


def test_boxes_and_points_come_back_in_source_pixels() -> None:
    image = Geometry(width=80, height=60, canvas=112)  # letterboxed: rows 14-98 of the canvas
    detection, landmark = get_task("detection"), get_task("landmark")
    box = detection.question_fields({"target": "x"}, image)
    assert box == {"target": "x", "dimension": 2}
    grid = [image.box_to_grid([50, 20, 60, 30])]
    assert detection.to_source(grid, box, image) == [[50, 20, 60, 30]]
    assert detection.to_source([(0, 125, 1000, 875)], box, image) == [[0, 0, 80, 60]]
    volume = Geometry(width=40, height=40, canvas=112, depth=6)
    point = landmark.question_fields({"target": "x"}, volume)
    assert point == {"landmark": "x", "dimension": 3}
    assert landmark.to_source((500, 250, 500), point, volume) == [20, 10, 3]
    assert landmark.to_source(None, point, volume) is None
    with pytest.raises(QuestionError, match="--question, --options"):
        answer_image(None, [], "classification", "en", canvas=112, slices=4)  # type: ignore[arg-type]
