"""Each class's recall beside the table: a class the model never names shows as 0, with what
it answered instead, per language and for each model."""

from __future__ import annotations

from rich.console import Console

from shared_model.tasks import Reading
from simulations.class_recall import MALFORMED, class_recall, impression, print_class_recall
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


def report(number: int, lang: str, finding: str):
    text = {
        "en": f"Findings: a {finding} in the left lung. Impression: {finding}.",
        "zh": f"所见：左侧肺部见{finding}。印象：{finding}。",
    }[lang]
    return as_sample({"id": "r", "task": "report", "lang": lang, "report": text}, number)


def test_each_class_says_how_often_the_reports_on_its_images_name_it() -> None:
    samples = [record(0, "en", 3), record(1, "en", 0), record(2, "zh", 3)]
    samples += [report(3, "en", "cyst"), report(4, "en", "cyst"), report(5, "zh", "囊肿")]
    samples.append(report(6, "en", "mass"))  # no classification record of a mass: no row
    written = [
        "Findings: a cyst in the left lung. Impression: cyst.",
        "Findings: lungs are clear. Impression: normal.",
        "所见：左侧肺部见囊肿。印象：囊肿。",
        "Findings: a mass in the left lung. Impression: mass.",
    ]
    final = [Reading(0, 0), Reading(0, 0), Reading(0, 0)]
    final += [Reading(text, text) for text in written]
    base = [Reading(0, 0)] * 3 + [Reading(None, written[0])] * 4  # malformed: never counts
    rows = {(r["lang"], r["class"]): r for r in class_recall(samples, {"b": base, "f": final})}
    assert rows[("en", "cyst")]["f"] == 0.0  # never answered in classification ...
    assert rows[("en", "cyst")]["reports"] == 2
    assert rows[("en", "cyst")]["f in reports"] == 0.5  # ... named in one report of two
    assert rows[("en", "cyst")]["b in reports"] == 0.0
    assert rows[("zh", "囊肿")]["f in reports"] == 1.0
    assert "reports" not in rows[("en", "normal")]
    console = Console(record=True, width=200)
    print_class_recall(list(rows.values()), ("b", "f"), console)
    shown = console.export_text()
    assert "named f" in shown and "0.50" in shown


def test_a_report_names_the_finding_after_its_impression_marker() -> None:
    assert impression("Findings: a cyst in the left lung. Impression: cyst.", "en") == "cyst"
    assert impression("所见：双肺清晰。印象：正常。", "zh") == "正常"
    assert impression("Impression:", "en") is None
    assert impression("a cyst, no impression", "en") is None
    assert impression(None, "en") is None
