"""VQA-RAD (Lau et al. 2018): radiology question-answer pairs as ``vqa`` records.

The official test split is the records whose ``phrase_type`` is ``test_freeform`` or
``test_para``; everything else is train. An image is one patient, so all its questions stay
in one site. Closed yes/no questions get ``options``; other questions are open. The modality
comes from what the image's own questions and answers say (``Is this a CT?`` - yes), else
from the organ where VQA-RAD has only one modality for it (chest X-ray, abdominal CT). Each
image's caption names its modality and organ; it is train data when any of the image's
questions is.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from simulations.datasets.archive import PublicDataset, copy_of, describe, yes_no_options

ANNOTATIONS = "VQA_RAD Dataset Public.json"
TEST_PHRASES = ("test_freeform", "test_para")
MODALITY_WORDS = {
    "MR": r"\b(mri?|t1|t2|flair|dwi|adc|diffusion|gadolinium)\b",
    "CT": r"\bct\b",
    "CR": r"\b(x-?\s?rays?|xr|cxr|plain film|radiograph|pa)\b",
    "US": r"\b(ultrasound|sonograph\w*)\b",
}
ORGAN_MODALITY = {"CHEST": "CR", "ABD": "CT"}
ORGAN_REGION = {"HEAD": "head", "CHEST": "chest", "ABD": "abdomen"}


def convert(source: Path, limit: int | None = None) -> PublicDataset:
    """Every question of ``source`` (or the first ``limit`` of each split) as a vqa record."""
    entries = json.loads((source / ANNOTATIONS).read_text(encoding="utf-8"))
    modalities = image_modalities(entries)
    dataset = PublicDataset("vqa-rad")
    kept: Counter = Counter()
    captioned: dict[str, dict] = {}
    for entry in entries:
        split = "test" if entry["phrase_type"] in TEST_PHRASES else "train"
        if limit is not None and kept[split] >= limit:
            continue
        kept[split] += 1
        image = entry["image_name"]
        relative = f"images/{image}"
        dataset.files[relative] = copy_of(source / "images" / image)
        record = _record(entry, split, relative, modalities[image])
        dataset.add(record, entry["image_organ"])
        if captioned.setdefault(image, record)["split"] == "test" and split == "train":
            captioned[image] = record
    for image, record in captioned.items():
        region = ORGAN_REGION.get(dataset.labels[record["patient_id"]], "body")
        dataset.add_caption(record, describe(modalities[image], region))
    return dataset


def _record(entry: dict, split: str, image: str, modality: str | None) -> dict:
    answer = str(entry["answer"]).strip()
    closed = entry["answer_type"].strip().upper() == "CLOSED"
    options = yes_no_options(answer.lower(), "en") if closed else None
    record = {
        "id": f"vqarad-{entry['qid']}",
        "patient_id": Path(entry["image_name"]).stem,
        "task": "vqa",
        "lang": "en",
        "split": split,
        "images": [image],
        "question": entry["question"].strip(),
        "answer": answer.lower() if options else answer,
    }
    if options:
        record["options"] = options
    if modality:
        record["modality"] = modality
    return record


def image_modalities(entries: list[dict]) -> dict[str, str | None]:
    """Each image's modality by majority of its questions' evidence, else by its organ."""
    votes: dict[str, Counter] = defaultdict(Counter)
    organs = {}
    for entry in entries:
        image = entry["image_name"]
        organs[image] = entry["image_organ"]
        for modality in _evidence(entry):
            votes[image][modality] += 1
    return {
        image: votes[image].most_common(1)[0][0] if votes[image] else ORGAN_MODALITY.get(organ)
        for image, organ in organs.items()
    }


def _evidence(entry: dict) -> list[str]:
    """Modalities a question affirms: the question of a yes, or the text of an answer."""
    question = entry["question"].lower()
    answer = str(entry["answer"]).strip().lower()
    if re.search(r"\bnot\b", question) or answer == "no":
        return []
    text = question if answer == "yes" else answer
    return [name for name, pattern in MODALITY_WORDS.items() if re.search(pattern, text)]
