"""Tiny copies of public datasets in their release formats, and the archive check they must pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from client.archive import load_site_samples
from client.archive.manifest import read_manifest
from client.config import SiteConfig


def check_archive(archive: Path, work: Path) -> list[dict]:
    """Read ``archive`` with the site loader; assert every record is usable; return the records."""
    config = SiteConfig(path=work / "site.toml", name=archive.name, archive=archive, work_dir=work)
    samples, report = load_site_samples(config, canvas=56, slices=4)
    assert report.problems == [], report.problems[:3]
    records, _ = read_manifest(archive)
    assert len(samples) == len(records) > 0
    lines = (archive / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _image(path: Path, size: tuple[int, int], seed: int, mode: str = "L") -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def _question(qid: int, img_id: int, lang: str, question: str, answer: str, kind: str) -> dict:
    return {
        "img_id": img_id,
        "img_name": f"xmlab{img_id}/source.jpg",
        "question": question,
        "answer": answer,
        "q_lang": lang,
        "location": "Abdomen" if img_id != 3 else "Lung",
        "modality": "CT" if img_id != 3 else "X-Ray",
        "answer_type": kind,
        "base_type": "vqa",
        "content_type": "Organ",
        "triple": ["vhead", "_", "_"],
        "qid": qid,
    }


def write_slake(root: Path) -> Path:
    """SLAKE: image 1 (train, with boxes), 2 (val, no detection.json), 3 (test)."""
    splits = {
        "train.json": [
            _question(0, 1, "en", "Is the liver healthy?", "Yes", "CLOSED"),
            _question(1, 1, "zh", "肝脏健康吗？", "是", "CLOSED"),
            _question(2, 1, "en", "Which organ is on the left?", "Liver", "OPEN"),
            _question(3, 1, "zh", "图像中最大的器官是什么？", "肝脏", "OPEN"),
            _question(4, 1, "en", "Which side is the spleen on?", "Left", "CLOSED"),
        ],
        "validate.json": [_question(5, 2, "en", "Does it have a tumor?", "No", "CLOSED")],
        "test.json": [_question(6, 3, "zh", "这是什么成像方式？", "X光", "OPEN")],
    }
    for name, entries in splits.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    for img_id in (1, 2, 3):
        _image(root / "imgs" / f"xmlab{img_id}" / "source.jpg", (64, 64), img_id, "RGB")
    boxes = [{"Liver": [10, 12, 20, 15]}, {"Kidney": [5, 30, 8, 10]}, {"Kidney": [40, 30, 8, 10]}]
    (root / "imgs" / "xmlab1" / "detection.json").write_text(json.dumps(boxes), encoding="utf-8")
    return root


def write_iu_xray(root: Path) -> Path:
    """R2Gen's IU X-Ray: one study per split, two views each."""
    annotation = {}
    for number, split in enumerate(("train", "val", "test"), start=1):
        study = f"CXR{number}_IM-000{number}"
        paths = [f"{study}/0.png", f"{study}/1.png"]
        for view, path in enumerate(paths):
            _image(root / "images" / path, (48, 40), number * 10 + view)
        annotation[split] = [
            {
                "id": study,
                "report": f"The lungs are clear. Study {number}. ",
                "image_path": paths,
                "split": split,
            }
        ]
    (root / "annotation.json").write_text(json.dumps(annotation), encoding="utf-8")
    return root


ISBI_SIZE = (120, 150)


def isbi_points(stem: str, shift: int) -> list[tuple[int, int]]:
    """19 distinct points inside the fixture image, moved by ``shift`` pixels."""
    base = int(stem) % 7
    return [(10 + 5 * k + base + shift, 20 + 6 * k + shift) for k in range(19)]


def write_isbi(root: Path) -> Path:
    """ISBI 2015: 001, 002 (training), 151 (Test1), 301 (Test2, senior annotation only)."""
    folders = {"001": "TrainingData", "002": "TrainingData", "151": "Test1Data"}
    folders["301"] = "Test2Data"
    for stem, folder in folders.items():
        _image(root / "RawImage" / folder / f"{stem}.bmp", ISBI_SIZE, int(stem), "RGB")
        doctors = {"400_senior": 0, "400_junior": 2} if stem != "301" else {"400_senior": 0}
        for doctor, shift in doctors.items():
            lines = [f"{x},{y}" for x, y in isbi_points(stem, shift)] + [
                str(k % 3 + 1) for k in range(8)
            ]
            path = root / "AnnotationsByMD" / doctor / f"{stem}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
