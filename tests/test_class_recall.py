"""Each class's recall beside the table: a class the model never names shows as 0, with what
it answered instead, per language and for each model."""

from __future__ import annotations

from rich.console import Console

from shared_model.tasks import Reading
from simulations.class_recall import MALFORMED, class_recall, print_class_recall
from tests.test_language_twins import as_sample

OPTIONS = {"en": ["normal", "nodule", "mass", "cyst"], "zh": ["正常", "结节", "肿块", "囊肿"]}


def record(number: int, lang: str, label: int):
    fields = {"id": "c", "task": "classification", "lang": lang, "label": label}
    return as_sample({**fields, "options": OPTIONS[lang], "question": "Q?"}, number)


def test_a_class_never_named_has_recall_zero_and_shows_what_was_answered() -> None:
    labels = [0, 0, 3, 3, 3, 1]
    samples = [record(i, "en", k) for i, k in enumerate(labels)] + [record(9, "zh", 3)]
    samples.append(as_sample({"id": "v", "task": "vqa", "lang": "en", "question": "Q?"}))
    base = [Reading(k, k) for k in (0, 0, 0, 0, 0, 1, 3, None)]
    final = [Reading(k, k) for k in (0, 0, 0, 0, None, 2, 3, None)]
    rows = class_recall(samples, {"round 0": base, "final": final})
    assert [(r["lang"], r["class"]) for r in rows] == [
        ("en", "normal"), ("en", "nodule"), ("en", "cyst"), ("zh", "囊肿")
    ]  # fmt: skip
    by_class = {(r["lang"], r["class"]): r for r in rows}
    assert set(by_class) == {("en", "normal"), ("en", "nodule"), ("en", "cyst"), ("zh", "囊肿")}
    cyst = by_class[("en", "cyst")]
    assert cyst["records"] == 3 and cyst["round 0"] == cyst["final"] == 0.0
    assert cyst["answered"] == {"normal": 2, MALFORMED: 1}
    assert (
        by_class[("en", "nodule")]["round 0"] == 1.0 and by_class[("en", "nodule")]["final"] == 0.0
    )
    assert by_class[("zh", "囊肿")]["final"] == 1.0 and by_class[("zh", "囊肿")]["answered"] == {
        "囊肿": 1
    }

    console = Console(record=True, width=160)
    print_class_recall(rows, ("round 0", "final"), console)
    shown = console.export_text()
    assert "recall round 0" in shown and "normal 2, (not in format) 1" in shown


def test_no_classification_records_no_rows() -> None:
    vqa = as_sample({"id": "v", "task": "vqa", "lang": "en", "question": "Q?"})
    assert class_recall([vqa], {"final": [Reading(None, None)]}) == []
