"""``benchmarks/subspace_coverage.py``: what the public gradient subspace keeps of each task."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def subspace_coverage() -> ModuleType:
    return load_benchmark("subspace_coverage.py")


def test_a_task_inside_its_public_span_is_kept_and_one_outside_is_not(subspace_coverage) -> None:
    generator = torch.Generator().manual_seed(0)
    axes = torch.eye(12, dtype=torch.float64)
    # public "boxes" span axes 0-2, public "vqa" axes 3-5; axes 6-11 hold no public gradient
    public = torch.cat(
        [
            torch.randn(8, 3, generator=generator, dtype=torch.float64) @ axes[0:3],
            torch.randn(8, 3, generator=generator, dtype=torch.float64) @ axes[3:6],
        ]
    )
    public_tasks = ["boxes"] * 8 + ["vqa"] * 8
    # the sites' boxes lie in the boxes' public span; their vqa half in it, half outside
    site = torch.cat(
        [
            torch.randn(6, 3, generator=generator, dtype=torch.float64) @ axes[0:3],
            torch.ones(6, 1, dtype=torch.float64) * (axes[3] + axes[7]),
        ]
    )
    site_tasks = ["boxes"] * 6 + ["vqa"] * 6

    result = subspace_coverage.coverage(public, public_tasks, site, site_tasks, 6, [1, 3])

    assert result["boxes"]["public_records"] == 8
    assert result["boxes"]["site_basis"]["record"] == pytest.approx(1.0)
    assert result["boxes"]["own"][3]["mean"] == pytest.approx(1.0)
    assert result["boxes"]["own"][1]["record"] < 1.0  # one direction of three
    assert result["vqa"]["site_basis"]["record"] == pytest.approx(0.5**0.5)
    assert result["vqa"]["site_basis"]["mean"] == pytest.approx(0.5**0.5)
    assert result["vqa"]["coherence"] == pytest.approx(1.0)  # six copies of one gradient
    assert result["vqa"]["median_norm"] == pytest.approx(2**0.5)
    assert 0.0 < result["boxes"]["coherence"] < 1.0


def test_a_task_without_public_records_has_no_own_directions(subspace_coverage) -> None:
    public = torch.eye(4, dtype=torch.float64)[:2]
    site = torch.eye(4, dtype=torch.float64)[2:]
    result = subspace_coverage.coverage(public, ["a", "a"], site, ["b", "b"], 2, [1, 2])
    assert result["b"]["public_records"] == 0 and result["b"]["own"] == {}
    assert result["b"]["site_basis"]["record"] == pytest.approx(0.0, abs=1e-12)
