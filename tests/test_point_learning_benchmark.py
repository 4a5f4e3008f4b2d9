"""``benchmarks/point_learning.py``: whether a base can learn to point at the marker at all."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest

from shared_model.tiny import TINY_CANVAS
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def point_learning() -> ModuleType:
    return load_benchmark("point_learning.py")


def brightest_centre(image: np.ndarray) -> tuple[float, float]:
    """The centroid of an image's brightest pixels, in grid units."""
    grey = image[..., 0].astype(float)
    rows, columns = np.nonzero(grey >= grey.max() - 20)
    return 1000 * (columns.mean() + 0.5) / TINY_CANVAS, 1000 * (rows.mean() + 0.5) / TINY_CANVAS


@pytest.mark.parametrize("marker_range", ["hospital", "wide"])
def test_a_scene_s_point_is_where_its_ring_is_drawn(point_learning, marker_range) -> None:
    (x_low, x_high), (y_low, y_high) = point_learning.RANGES[marker_range]
    for image, (x, y) in point_learning.draw_images("scenes", marker_range, 12, seed=3):
        assert image.shape == (TINY_CANVAS, TINY_CANVAS, 1)
        assert 1000 * x_low <= x <= 1000 * x_high and 1000 * y_low <= y <= 1000 * y_high
        assert math.dist(brightest_centre(image), (x, y)) < 1000 / TINY_CANVAS


@pytest.mark.parametrize("windowing", ["file", "percentile"])
def test_a_chest_s_point_is_on_its_marker(point_learning, windowing) -> None:
    images = point_learning.draw_images("chest", "hospital", 12, seed=3, windowing=windowing)
    lowest = 255
    for image, (x, y) in images:
        column, row = (round(v * TINY_CANVAS / 1000) for v in (x, y))
        ring = image[row - 2 : row + 3, column - 2 : column + 3, 0].astype(int)
        assert ring.max() >= 250  # the marker is the brightest thing in a radiograph
        assert 420 <= x <= 580 and 150 <= y <= 300
        lowest = min(lowest, ring.max() - int(image[2:4, 25:31, 0].mean()))  # body above it
    assert len({point for _, point in images}) == len(images)
    # under the hospitals' window the ring stands out of the body in every radiograph; the
    # percentile stretch leaves it within a few grey levels of it in some
    assert lowest > 100 if windowing == "file" else lowest < 40


def test_points_are_scored_against_the_truth(point_learning) -> None:
    truth = [(100.0, 200.0), (300.0, 400.0), (500.0, 600.0), (700.0, 800.0)]
    exact = point_learning.point_scores([(round(x), round(y)) for x, y in truth], truth)
    assert exact == pytest.approx(
        {"read": 1.0, "mean_error": 0.0, "sdr": 1.0, "corr_x": 1.0, "corr_y": 1.0}
    )
    # an unread answer is a miss; a point 30 away is read but outside the SDR radius
    scores = point_learning.point_scores([None, (330, 400), (500, 600), (700, 800)], truth)
    assert scores["read"] == 0.75 and scores["sdr"] == 0.5
    assert scores["mean_error"] == pytest.approx(10.0)


def test_the_constant_answer_tells_nothing_of_the_image(point_learning) -> None:
    train = point_learning.draw_images("scenes", "wide", 20, seed=1)
    test = point_learning.draw_images("scenes", "wide", 20, seed=2)
    scores = point_learning.constant_scores(train, test)
    assert scores["corr_x"] == scores["corr_y"] == 0.0
    assert scores["mean_error"] > 100
