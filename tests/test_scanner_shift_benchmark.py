"""``benchmarks/scanner_shift.py``: each scanner's radiographs, and recall read off the choices."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from shared_model.sample import Geometry, Sample
from shared_model.tasks import get_task
from simulations.class_recall import class_recall
from simulations.phantoms import PUBLIC_SCANNER, Scanner
from simulations.synthetic import OPTIONS
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def scanner_shift() -> ModuleType:
    return load_benchmark("scanner_shift.py")


def test_a_scanner_is_read_as_border_and_noise(scanner_shift) -> None:
    assert scanner_shift.parse_scanner("0.25:1.5") == Scanner(border=0.25, noise=1.5)
    assert scanner_shift.DEFAULT_SCANNERS[0] == "0.1667:2"
    assert scanner_shift.parse_scanner(scanner_shift.DEFAULT_SCANNERS[-1]) == Scanner()


def test_the_records_are_radiographs_framed_by_their_scanner(scanner_shift, tiny_spec) -> None:
    wide = scanner_shift.radiograph_records(PUBLIC_SCANNER, 6, 0, tiny_spec)
    tight = scanner_shift.radiograph_records(Scanner(), 6, 0, tiny_spec)
    assert wide and len(wide) == len(tight)
    for records in (wide, tight):
        assert {s.task for s in records} == {"classification"}
        assert all(len(s.images) == 1 and not s.is_volume for s in records)
    # the body spans 0.96 of the anatomy's height (simulations.phantoms), and the anatomy
    # 1 / (1 + 2 border) of the canvas: read down the canvas's middle column
    for scanner, records in ((PUBLIC_SCANNER, wide), (Scanner(), tight)):
        share = 0.96 / (1 + 2 * scanner.border)
        assert [body_rows(s.images[0]) for s in records] == pytest.approx(
            [share] * len(records), abs=0.03
        )


def body_rows(image: np.ndarray) -> float:
    """The share of the middle column brighter than the canvas's corner (the background)."""
    column = image[:, image.shape[1] // 2, 0].astype(int)
    return float((column > int(image[0, 0, 0]) + 40).mean())


def record(lang: str, label: int) -> Sample:
    return Sample(
        record_id=f"{lang}-{label}",
        patient_id="P0",
        task="classification",
        lang=lang,
        split="test",
        images=(np.zeros((28, 28, 1), dtype=np.uint8),),
        geometries=(Geometry(28, 28, 28),),
        fields={"options": OPTIONS[lang], "label": label},
    )


def test_recall_and_answers_come_from_each_records_highest_option(scanner_shift) -> None:
    samples = [record("en", 3), record("zh", 3), record("en", 1), record("en", 0)]
    assert [get_task(s.task).reference(s.fields) for s in samples] == [3, 3, 1, 0]
    likelihoods = [[-1.0, -2.0, -3.0, -4.0], [-5.0, -4.0, -3.0, -0.5], [-3, -1, -2, -4]]
    likelihoods.append([-0.1, -2.0, -2.0, -2.0])
    readings = scanner_shift.choices(likelihoods)
    assert [reading.strict for reading in readings] == [0, 3, 1, 0]
    rows = class_recall(samples, {scanner_shift.MODEL: readings})
    recall = {(row["lang"], row["class"]): row[scanner_shift.MODEL] for row in rows}
    assert recall == {("en", "normal"): 1.0, ("en", "nodule"): 1.0, ("en", "cyst"): 0.0,
                      ("zh", "囊肿"): 1.0}  # fmt: skip
    assert [row["answered"] for row in rows if row["class"] in ("cyst", "囊肿")] == [
        {"normal": 1},
        {"囊肿": 1},
    ]
    assert scanner_shift.accuracy(rows) == pytest.approx(0.75)
    table = scanner_shift.shift_table({"0:1": {"anatomy_share": 1.0, "classes": rows}})
    assert table.row_count == 2  # one row per language, "-" where a class has no record
