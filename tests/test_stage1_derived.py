"""Stage-1 pairs a site derives from its own records (client/stage1.py)."""

from __future__ import annotations

import numpy as np
import pytest

from client.stage1 import DERIVED_SUFFIX, derive_captions, stage1_samples
from shared_model.sample import Geometry, Sample
from shared_model.tasks import ALIGN_TASKS

GEOMETRY = Geometry(28, 28, 56)


def record(task: str, fields: dict, *, lang: str = "en", seed: int = 0, patient: str = "p1"):
    image = np.random.default_rng(seed).integers(0, 255, (56, 56, 1), dtype=np.uint8)
    return Sample(
        f"{patient}-{task}-{seed}-{lang}", patient, task, lang, "train", (image,), (GEOMETRY,),
        fields,
    )  # fmt: skip


CLASSIFY = {"question": "What is it?", "options": ["normal", "pneumonia"], "label": 1}
ASK = {"question": "Is there a lesion?", "answer": "yes", "options": ["yes", "no"]}
REPORT = {"report": "Findings: a nodule. Impression: nodule."}
DETECT = {"target": "lesion", "boxes": [[100.0, 100.0, 300.0, 300.0]]}
MARK = {"landmark": "marker", "point": [500.0, 200.0]}


def test_one_caption_per_image_joins_what_its_records_say() -> None:
    samples = [
        record("classification", CLASSIFY),
        record("vqa", ASK),
        record("report", REPORT),
        record("detection", DETECT),
        record("landmark", MARK),
        record("classification", CLASSIFY, seed=1),
    ]
    captions = derive_captions(samples)
    assert len(captions) == 2
    first = captions[0]
    assert first.task == "caption" and first.patient_id == "p1" and first.split == "train"
    assert first.record_id.endswith(DERIVED_SUFFIX)
    assert first.fields["text"] == (
        "Finding: pneumonia. Is there a lesion? yes "
        "Findings: a nodule. Impression: nodule. lesion present."
    )
    assert captions[1].fields["text"] == "Finding: pneumonia."


def test_chinese_records_give_chinese_captions() -> None:
    zh = {"question": "影像所见是什么？", "options": ["正常", "肺炎"], "label": 1}
    captions = derive_captions(
        [
            record("classification", zh, lang="zh"),
            record("detection", {**DETECT, "target": "病灶"}, lang="zh"),
        ]
    )
    assert [c.fields["text"] for c in captions] == ["所见：肺炎。可见病灶。"]
    assert captions[0].lang == "zh"


@pytest.mark.parametrize(
    ("lang", "target", "said"), [("en", "lesion", "no lesion."), ("zh", "病灶", "未见病灶。")]
)
def test_a_detection_without_boxes_says_its_target_is_absent(lang, target, said) -> None:
    captions = derive_captions([record("detection", {"target": target, "boxes": []}, lang=lang)])
    assert [c.fields["text"] for c in captions] == [said]


def test_landmarks_alone_say_nothing() -> None:
    assert derive_captions([record("landmark", MARK)]) == []


@pytest.mark.parametrize(
    ("mode", "own", "expected"),
    [
        ("when-missing", False, 1),
        ("when-missing", True, 1),
        ("always", True, 2),
        ("never", False, 0),
    ],
)
def test_modes(mode: str, own: bool, expected: int) -> None:
    samples = [record("classification", CLASSIFY)]
    if own:
        samples.append(record("caption", {"text": "An x-ray."}, seed=5))
    chosen = stage1_samples(samples, mode, sorted(ALIGN_TASKS))
    assert len(chosen) == expected
    assert all(s.task in ALIGN_TASKS for s in chosen)


def test_no_derivation_when_the_policy_refuses_captions() -> None:
    assert stage1_samples([record("classification", CLASSIFY)], "always", ["compare"]) == []


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="derive_stage1"):
        stage1_samples([], "sometimes", sorted(ALIGN_TASKS))
