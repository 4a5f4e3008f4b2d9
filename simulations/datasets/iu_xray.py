"""IU X-Ray (Demner-Fushman et al. 2016) in R2Gen's release: chest X-ray ``report`` records.

``annotation.json`` maps each split (``train``, ``val``, ``test``) to studies ``{"id",
"report", "image_path": [...], "split"}``; the image paths are relative to ``images/``. Every
view of a study gets a report record, and the report as its caption; the patient is the
study's ``CXR<n>`` number.
"""

from __future__ import annotations

import json
from pathlib import Path

from simulations.datasets.archive import PublicDataset, copy_of

SPLITS = ("train", "val", "test")


def convert(source: Path, limit: int | None = None) -> PublicDataset:
    """Every study of every split (or the first ``limit`` of each), one record per view."""
    annotation = json.loads((source / "annotation.json").read_text(encoding="utf-8"))
    dataset = PublicDataset("iu-xray")
    for split in SPLITS:
        for study in annotation.get(split, [])[:limit]:
            for view, image in enumerate(study["image_path"]):
                relative = f"images/{image}"
                dataset.files[relative] = copy_of(source / relative)
                record = {
                    "id": f"iuxray-{study['id']}-{view}",
                    "patient_id": study["id"].split("_")[0],
                    "task": "report",
                    "lang": "en",
                    "split": split,
                    "images": [relative],
                    "modality": "CR",
                    "report": study["report"].strip(),
                }
                dataset.add(record, "chest")
                dataset.add_caption(record, record["report"])
    return dataset
