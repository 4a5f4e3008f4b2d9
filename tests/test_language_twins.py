"""Each synthetic test record asked in the other language: the twin is the record the synthetic
hospitals would have written in that language, and the gap is Chinese minus English over the
same images, with its bootstrap interval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared_model.sample import Geometry, Sample
from shared_model.spec import ModelSpec
from shared_model.tasks import Reading, get_task
from simulations.heldout import held_out_samples
from simulations.language_twins import RECORD_KEYS, language_gaps, language_twin
from simulations.phantoms import Finding
from simulations.runner import write_site_config
from simulations.synthetic import ct_records, generate_consortium, xray_records
from simulations.verdict import verdict, verdict_lines

IMAGE = np.zeros((28, 28, 1), dtype=np.uint8)


def as_sample(record: dict[str, Any], number: int = 0) -> Sample:
    fields = {key: value for key, value in record.items() if key not in RECORD_KEYS}
    return Sample(
        record_id=f"{record['id']}-{number}",
        patient_id=f"P{number}",
        task=record["task"],
        lang=record["lang"],
        split="test",
        images=(IMAGE,),
        geometries=(Geometry(28, 28, 28),),
        fields=fields,
    )


@pytest.mark.parametrize("lesion", [None, "nodule", "mass", "cyst"])
def test_the_twin_is_the_record_written_in_the_other_language(lesion: str | None) -> None:
    side = None if lesion is None else "right"
    xray = Finding(lesion, side, (10.0, 20.0, 30.0, 40.0), (48.0, 20.0))
    volume = Finding(lesion, side, (1.0, 2.0, 3.0, 4.0, 5.0, 6.0), (24.0, 11.0, 8.0))
    for lang, other in (("en", "zh"), ("zh", "en")):
        written = xray_records("P", "cr.dcm", xray, lang, "test", 0)
        written += ct_records("P", "ct.nii.gz", volume, lang, "test")
        expected = xray_records("P", "cr.dcm", xray, other, "test", 0)
        expected += ct_records("P", "ct.nii.gz", volume, other, "test")
        for record, translation in zip(written, expected, strict=True):
            twin = language_twin(as_sample(record))
            assert twin is not None, record
            assert twin.lang == other and twin.task == record["task"]
            assert dict(twin.fields) == as_sample(translation).fields
            assert twin.images[0] is IMAGE


def test_a_record_the_hospitals_never_write_has_no_twin() -> None:
    record = {"id": "q", "task": "vqa", "lang": "en", "question": "Is the heart enlarged?"}
    assert language_twin(as_sample({**record, "answer": "yes", "options": ["yes", "no"]})) is None
    options = {"id": "c", "task": "classification", "lang": "zh", "label": 1}
    assert language_twin(as_sample({**options, "options": ["正常", "肺炎"]})) is None


def test_every_test_record_of_a_synthetic_hospital_has_its_twin(
    tmp_path: Path, tiny_base: Path, tiny_spec: ModelSpec
) -> None:
    from shared_model.tiny import SPEC_FILE

    [archive] = generate_consortium(tmp_path / "archives", n_sites=1, patients=24, seed=3)
    site = write_site_config(
        tmp_path / "site.toml",
        name=archive.name,
        archive=archive,
        work_dir=tmp_path / "work",
        model_spec=tiny_base / SPEC_FILE,
    )
    samples = held_out_samples([site], tiny_spec)
    assert samples and {s.lang for s in samples} == {"en", "zh"}
    for sample in samples:
        twin = language_twin(sample)
        assert twin is not None, sample.fields
        assert language_twin(twin).fields == sample.fields  # and back
        for key, value in sample.fields.items():  # labels, boxes and points stay
            if not isinstance(value, (str, list)) or key in ("boxes", "point"):
                assert twin.fields[key] == value, key


def classification(number: int, lang: str) -> Sample:
    options = {"en": ["normal", "nodule", "mass", "cyst"], "zh": ["正常", "结节", "肿块", "囊肿"]}
    question = {"en": "What is the finding?", "zh": "影像所见是什么？"}[lang]
    record = {"id": "c", "task": "classification", "lang": lang, "label": number % 4}
    return as_sample({**record, "options": options[lang], "question": question}, number)


def reading(sample: Sample, right: bool) -> Reading:
    reference = get_task(sample.task).reference(sample.fields)
    answer = reference if right else (reference + 1) % 4
    return Reading(answer, answer)


def test_the_gap_is_chinese_minus_english_on_the_same_images() -> None:
    """Right in English on every image, in Chinese on one image in four: the gap is -0.75
    whichever language each record was written in, and its interval holds it."""
    samples = [classification(i, "en" if i % 2 else "zh") for i in range(80)]
    twins = [language_twin(s) for s in samples]
    right = {"en": lambda i: True, "zh": lambda i: i % 4 == 0}
    readings = [reading(s, right[s.lang](i)) for i, s in enumerate(samples)]
    twin_readings = [reading(t, right[t.lang](i)) for i, t in enumerate(twins)]
    [gap] = language_gaps(samples, readings, twins, twin_readings, {"classification": "accuracy"})
    assert (gap.task, gap.metric, gap.records) == ("classification", "accuracy", 80)
    assert (gap.english, gap.chinese) == (1.0, 0.25) and gap.gap == -0.75
    low, high = gap.interval
    assert low < -0.75 < high < 0.0

    table = [
        {"task": "classification", "lang": lang, "metric": "accuracy", "headline": True,
         "better": "higher", "round 0": 0.2, "final": final, "interval": [-0.1, 0.1]}
        for lang, final in (("en", 0.5), ("zh", 0.9))
    ]  # fmt: skip
    over_own_records = verdict(table, "round 0", "final")
    assert over_own_records.chinese_gap == {"classification": pytest.approx(0.4)}
    assert over_own_records.chinese_gap_interval == {}
    same_images = verdict(table, "round 0", "final", [gap])
    assert same_images.chinese_gap == {"classification": -0.75}
    assert same_images.chinese_gap_interval == {
        "classification": [round(v, 4) for v in (low, high)]
    }
    assert "on the same images: classification -0.750 [" in "\n".join(verdict_lines(same_images))


def test_gaps_need_one_twin_and_one_reading_each() -> None:
    samples = [classification(i, "en") for i in range(4)]
    twins = [language_twin(s) for s in samples]
    readings = [reading(s, True) for s in samples]
    with pytest.raises(ValueError, match="one twin per sample"):
        language_gaps(samples, readings, twins[:3], readings, {"classification": "accuracy"})
