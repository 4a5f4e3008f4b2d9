"""Shared fixtures: the tiny base is built once per test session, offline."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if TYPE_CHECKING:
    from tests.deploy_fixtures import Processes

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run first; tests marked ``full_shape`` run only when
    ``FEDUMIT_FULL_SHAPE=1`` asks for them.

    ``make test`` spreads whole files over two pytest-xdist workers in this order
    (``--dist loadfile --no-loadscope-reorder``): the long end-to-end files start at once and
    the short ones fill the gaps, instead of one long file running alone at the end.
    """
    items.sort(key=lambda item: "slow" not in item.keywords)  # stable: files keep their order
    if os.environ.get("FEDUMIT_FULL_SHAPE") == "1":
        return
    skip = pytest.mark.skip(reason="full-shape base: set FEDUMIT_FULL_SHAPE=1 to run")
    for item in items:
        if "full_shape" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_base() -> Path:
    """The default tiny base (from the user-level cache, built there once per recipe;
    ``FEDUMIT_TEST_BASE`` names a prebuilt directory instead)."""
    from shared_model.tiny import ensure_tiny_base

    prebuilt = os.environ.get("FEDUMIT_TEST_BASE")
    return ensure_tiny_base(Path(prebuilt) if prebuilt else None, progress=False)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Real processes a test starts (Flower's SuperLink, SuperNodes, ...); all stopped at its
    end, pass or fail."""
    from tests.deploy_fixtures import running

    with running(tmp_path) as started:
        yield started


@pytest.fixture(scope="session")
def tiny_spec(tiny_base: Path):
    """The model spec of the session's tiny base."""
    from shared_model.tiny import tiny_spec as spec_for

    return spec_for(tiny_base)


def lesion_image(side: str, canvas: int = 112, seed: int = 0) -> np.ndarray:
    """A dark canvas with a bright rectangle on the ``left`` or ``right``."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 80, (canvas, canvas, 3), dtype=np.uint8)
    x0 = canvas // 6 if side == "left" else canvas * 3 // 5
    image[canvas // 3 : canvas // 3 + canvas // 4, x0 : x0 + canvas // 5] = 230
    return image


def lesion_volume(side: str, slices: int = 4, canvas: int = 112) -> np.ndarray:
    """A stack of :func:`lesion_image` slices."""
    return np.stack([lesion_image(side, canvas, seed) for seed in range(slices)])


def side_records(sides: tuple[str, ...] = ("left", "right", "left", "right")) -> list:
    """English classification records, one a side, each answering where its lesion is
    (``left`` or ``right``), patient ``p{n}`` for record ``r{n}``."""
    from shared_model.sample import Geometry, Sample

    return [
        Sample(
            f"r{number}",
            f"p{number}",
            "classification",
            "en",
            "train",
            (lesion_image(side, seed=number),),
            (Geometry(112, 112, 112),),
            {"question": "Which side?", "options": ["left", "right"], "label": side},
        )
        for number, side in enumerate(sides)
    ]


def load_benchmark(filename: str) -> ModuleType:
    """The script ``benchmarks/<filename>`` imported as a module (its folder on the path, so
    that it finds the benchmarks it imports; registered, so that its dataclasses find it)."""
    folder = REPO_ROOT / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(
        f"{Path(filename).stem}_benchmark", folder / filename
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
