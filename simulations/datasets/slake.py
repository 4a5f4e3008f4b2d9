"""SLAKE (Liu et al. 2021): bilingual radiology VQA, with organ boxes as ``detection`` records.

The release holds ``train.json``, ``validate.json`` and ``test.json`` (one entry per question:
``qid``, ``img_id``, ``img_name``, ``question``, ``answer``, ``q_lang`` ``en``/``zh``,
``answer_type`` ``OPEN``/``CLOSED``, ``modality``, ``location``) and ``imgs/xmlab<id>/`` with
``source.jpg`` and ``detection.json``: a list of ``{organ: [x, y, width, height]}``. An image
is one patient and belongs to one split; its boxes become one English detection record per
organ, in the image's split, and its modality and body region an English caption.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from simulations.datasets.archive import PublicDataset, copy_of, describe, yes_no_options

SPLIT_FILES = {"train": "train.json", "val": "validate.json", "test": "test.json"}
MODALITIES = {"MRI": "MR", "CT": "CT", "X-RAY": "CR"}


def convert(source: Path, limit: int | None = None) -> PublicDataset:
    """Every question of every split (or the first ``limit`` of each) and the kept images' boxes."""
    dataset = PublicDataset("slake")
    images: dict[str, dict] = {}
    for split, file in SPLIT_FILES.items():
        entries = json.loads((source / file).read_text(encoding="utf-8"))
        for entry in entries[:limit]:
            relative = f"imgs/{entry['img_name']}"
            dataset.files[relative] = copy_of(source / relative)
            record = _question(entry, split, relative)
            images.setdefault(relative, record)
            dataset.add(record, entry["location"])
    for relative, first in images.items():
        region = dataset.labels[first["patient_id"]].lower()
        dataset.add_caption(first, describe(first["modality"], region))
        for record in _detections(source / Path(relative).parent / "detection.json", first):
            dataset.add(record, dataset.labels[first["patient_id"]])
    return dataset


def _question(entry: dict, split: str, image: str) -> dict:
    lang = entry["q_lang"]
    answer = str(entry["answer"]).strip()
    closed = entry["answer_type"].strip().upper() == "CLOSED"
    options = yes_no_options(answer.lower(), lang) if closed else None
    record = {
        "id": f"slake-{split}-{entry['qid']}",
        "patient_id": f"slake-{entry['img_id']}",
        "task": "vqa",
        "lang": lang,
        "split": split,
        "images": [image],
        "modality": MODALITIES.get(str(entry["modality"]).upper(), entry["modality"]),
        "question": entry["question"].strip(),
        "answer": answer.lower() if options else answer,
    }
    if options:
        record["options"] = options
    return record


def _detections(path: Path, first: dict) -> list[dict]:
    """One record per organ of ``detection.json`` (boxes as corners); none if it is absent."""
    if not path.is_file():
        return []
    boxes: dict[str, list[list[float]]] = defaultdict(list)
    for item in json.loads(path.read_text(encoding="utf-8")):
        for organ, (x, y, width, height) in item.items():
            if width > 0 and height > 0:
                boxes[organ].append([x, y, x + width, y + height])
    keep = ("patient_id", "split", "images", "modality")
    return [
        {
            **{key: first[key] for key in keep},
            "id": f"{first['patient_id']}-detect-{organ.lower().replace(' ', '-')}",
            "task": "detection",
            "lang": "en",
            "target": organ.lower(),
            "boxes": organ_boxes,
        }
        for organ, organ_boxes in boxes.items()
    ]
