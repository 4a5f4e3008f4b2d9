"""DP-SGD in a subspace of public gradients: the basis, the exact step, the noise, the site."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from client.config import SiteConfigError, SubspaceConfig, load_site_config
from client.privacy.subspace import GradientSubspace, top_directions
from client.trainer import TrainConfig
from server.coordinator import initial_arrays
from shared_model.tiny import SPEC_FILE
from simulations.runner import write_site_config
from simulations.synthetic import generate_consortium, generate_public_archive
from tests.test_dp_exact import (
    CLIP,
    EXACT_STEP,
    PURE_NOISE_STD,
    PURE_NOISE_STEP,
    _double_copy,
    instruct_trainer,
    site_samples,
    unit_gradients_brute_force,
)


def orthonormal(rows: int, columns: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(rows, columns, generator=generator, dtype=torch.float64))
    return basis


def test_top_directions_span_the_gradients_and_share_them_by_task() -> None:
    planted = orthonormal(50, 3, seed=0)
    generator = torch.Generator().manual_seed(1)
    common = torch.randn(40, 2, generator=generator, dtype=torch.float64) @ planted[:, :2].T
    rare = torch.randn(4, 1, generator=generator, dtype=torch.float64) @ planted[:, 2:].T
    gradients = torch.cat([common, rare])

    basis = top_directions(gradients, 3).double()
    torch.testing.assert_close(
        basis.T @ basis, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0
    )
    residual = gradients - gradients @ basis @ basis.T
    assert residual.norm() < 1e-5 * gradients.norm()

    # two directions: the rare task's is dropped unless each task gets its share
    labels = ["vqa"] * 40 + ["detection"] * 4
    rare_direction = planted[:, 2]
    assert (basis_of := top_directions(gradients, 2).double()).shape == (50, 2)
    assert (basis_of.T @ rare_direction).norm() < 1e-5
    shared = top_directions(gradients, 2, labels).double()
    torch.testing.assert_close(
        shared.T @ shared, torch.eye(2, dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert (shared.T @ rare_direction).norm() > 0.999

    with pytest.raises(ValueError, match="cannot take 45 directions"):
        top_directions(gradients, 45)


def test_project_then_lift_is_the_orthogonal_projection() -> None:
    parameters = [torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(5))]
    basis = orthonormal(17, 4, seed=2).float()
    subspace = GradientSubspace(parameters, basis)
    grads = {p: torch.randn(2, *p.shape) for p in parameters}
    coordinates = subspace.project(grads)
    assert coordinates.shape == (2, 4)
    flat = torch.cat([grads[p].flatten(1) for p in parameters], dim=1)
    lifted = subspace.lift(coordinates[1])
    torch.testing.assert_close(
        torch.cat([lifted[p].flatten() for p in parameters]), basis @ basis.T @ flat[1]
    )
    # a parameter without a gradient counts as zero
    partial = subspace.project({parameters[0]: grads[parameters[0]]})
    torch.testing.assert_close(partial, flat[:, :12] @ basis[:12])
    with pytest.raises(ValueError, match="for 17 trainable entries"):
        GradientSubspace(parameters, basis[:16])


def test_one_dp_step_in_a_subspace_matches_hand_computation(tiny_spec) -> None:
    """Each patient's gradient (the sum over its records, float64 brute force) projected on the
    basis, its coordinates clipped to C, summed, lifted and divided by q N: the step's update."""
    torch.manual_seed(0)
    trainer = instruct_trainer(tiny_spec, init_lora_weights=False)
    adapter, processor = trainer.adapter, trainer.processor
    samples, units = site_samples()
    examples = trainer.encode(samples)
    names = [n for n, _ in adapter.trainable_parameters()]
    parameters = [p for _, p in adapter.trainable_parameters()]
    d = sum(p.numel() for p in parameters)
    basis = orthonormal(d, 6, seed=3)
    before = adapter.arrays()

    unit_of = [int(u.split("-")[1]) for u in units]
    brute = unit_gradients_brute_force(
        _double_copy(adapter, tiny_spec), examples, unit_of, processor.tokenizer.pad_token_id
    )
    coordinates = [torch.cat([g.flatten() for g in grads]) @ basis for grads in brute]
    assert all(c.norm() > CLIP for c in coordinates), "the test must exercise clipping"
    clipped = sum(c * min(1.0, CLIP / float(c.norm())) for c in coordinates)
    whole = [torch.cat([g.flatten() for g in grads]).norm() for grads in brute]
    assert any(abs(c.norm() - w) > 0.1 * w for c, w in zip(coordinates, whole, strict=True)), (
        "projecting must change the norms clipped here"
    )
    expected_flat = (basis @ clipped) / 3.0

    subspace = GradientSubspace(parameters, basis.float())
    trainer.train(samples, units, EXACT_STEP, subspace=subspace, progress=False)

    after = adapter.arrays()
    offset = 0
    for name, parameter in zip(names, parameters, strict=True):
        size = parameter.numel()
        expected_grad = expected_flat[offset : offset + size].reshape(parameter.shape)
        offset += size
        expected = before[name] - EXACT_STEP.learning_rate * expected_grad.float().numpy()
        np.testing.assert_allclose(after[name], expected, atol=1e-6, rtol=1e-4, err_msg=name)


def test_subspace_noise_is_calibrated_and_stays_in_the_subspace(tiny_spec) -> None:
    trainer = instruct_trainer(tiny_spec)
    adapter = trainer.adapter
    samples, units = site_samples()
    parameters = [p for _, p in adapter.trainable_parameters()]
    d = sum(p.numel() for p in parameters)
    k = 400
    basis = orthonormal(d, k, seed=4)
    before = adapter.arrays()
    subspace = GradientSubspace(parameters, basis.float())
    trainer.train(samples, units, PURE_NOISE_STEP, subspace=subspace, progress=False)
    after = adapter.arrays()
    names = [n for n, _ in adapter.trainable_parameters()]
    delta = torch.from_numpy(np.concatenate([(after[n] - before[n]).ravel() for n in names]))
    delta = delta.double()
    coordinates = basis.T @ delta
    outside = delta - basis @ coordinates
    assert outside.norm() < 1e-4 * delta.norm()
    std = float(coordinates.std()) / PURE_NOISE_STD
    assert abs(std - 1.0) < 5 / math.sqrt(2 * k)
    # the noise's norm is that of k coordinates, not of d
    assert delta.norm() < 2 * PURE_NOISE_STD * math.sqrt(k) < PURE_NOISE_STD * math.sqrt(d) / 4


def test_no_subspace_without_dp(tiny_spec) -> None:
    trainer = instruct_trainer(tiny_spec)
    adapter = trainer.adapter
    parameters = [p for _, p in adapter.trainable_parameters()]
    basis = orthonormal(sum(p.numel() for p in parameters), 2, seed=5).float()
    samples, units = site_samples()
    with pytest.raises(ValueError, match="no DP"):
        trainer.train(
            samples,
            units,
            TrainConfig(steps=1, sample_rate=1.0, dp=False),
            subspace=GradientSubspace(parameters, basis),
            progress=False,
        )


@pytest.fixture
def public_sites(tmp_path: Path, tiny_base: Path) -> list[Path]:
    """Two sites of different patients that share one public archive."""
    public = generate_public_archive(tmp_path / "public", patients=8)
    configs = []
    for seed in (5, 6):
        archive = generate_consortium(
            tmp_path / f"archives-{seed}", n_sites=1, patients=6, seed=seed
        )[0]
        configs.append(
            write_site_config(
                tmp_path / f"site-{seed}.toml",
                name=archive.name,
                archive=archive,
                work_dir=tmp_path / f"work-{seed}",
                model_spec=tiny_base / SPEC_FILE,
                subspace={"public_archive": str(public), "directions": 8, "records": 24},
            )
        )
    return configs


def test_a_site_finds_its_subspace_from_public_records_only(public_sites: list[Path]) -> None:
    """The basis is a function of the public records and the global adapter: two sites of
    different patients find the same one, and it moves with the global adapter."""
    from client.site import Site

    bases = []
    for path in public_sites:
        site = Site(load_site_config(path), progress=False)
        trainer = site.trainer("instruct")
        arrays = initial_arrays(site.spec, "instruct", 0, None)
        arrays = {n: a + 0.01 for n, a in arrays.items()}  # B != 0: A has gradients too
        trainer.adapter.load_arrays(arrays, site.fingerprint)
        config = TrainConfig(steps=1, sample_rate=1.0)
        subspace = site.public_subspace(trainer, config)
        assert subspace is not None and subspace.dimension == 8
        public_patients = {s.patient_id for s in site._public["subspace", "instruct"]}
        assert public_patients.isdisjoint({s.patient_id for s in site.samples("train", "instruct")})
        bases.append(subspace.basis)
        moved = {n: a * 1.5 for n, a in arrays.items()}
        trainer.adapter.load_arrays(moved, site.fingerprint)
        other = site.public_subspace(trainer, config).basis
    torch.testing.assert_close(bases[0], bases[1], atol=1e-5, rtol=1e-4)
    assert (bases[0] - other).abs().max() > 1e-3


def test_a_public_record_sharing_a_site_records_id_is_not_taken_for_it(
    tmp_path: Path, tiny_base: Path
) -> None:
    """Record ids are unique within one archive only. After the site's own records are
    encoded for a round, public records of the same ids still give their own gradients: the
    basis is the one a site that never read its archive finds, so it stays public."""
    from client.site import Site, public_records

    public = generate_public_archive(tmp_path / "public", patients=6, seed=0)
    own = generate_public_archive(tmp_path / "own", patients=6, seed=1)  # same ids, other images
    path = write_site_config(
        tmp_path / "site.toml",
        name="site",
        archive=own,
        work_dir=tmp_path / "work",
        model_spec=tiny_base / SPEC_FILE,
        subspace={"public_archive": str(public), "directions": 8, "records": 24},
    )

    def basis(after_own_records: bool) -> torch.Tensor:
        site = Site(load_site_config(path), progress=False)
        trainer = site.trainer("instruct")
        arrays = initial_arrays(site.spec, "instruct", 0, None)
        trainer.adapter.load_arrays({n: a + 0.01 for n, a in arrays.items()}, site.fingerprint)
        if after_own_records:
            encoded = site.encodable(trainer, site.samples("train", "instruct"))
            chosen = public_records(site.config, site.spec, "instruct")
            assert {s.record_id for s in encoded} & {s.record_id for s in chosen}
        return site.public_subspace(trainer, TrainConfig(steps=1, sample_rate=1.0)).basis

    torch.testing.assert_close(basis(True), basis(False), atol=1e-5, rtol=1e-4)


def test_the_subspace_section_is_checked(tmp_path: Path, tiny_base: Path) -> None:
    archive = generate_consortium(tmp_path / "archives", n_sites=1, patients=6, seed=5)[0]

    def config(**table) -> Path:
        return write_site_config(
            tmp_path / "site.toml",
            name="site",
            archive=archive,
            work_dir=tmp_path / "work",
            model_spec=tiny_base / SPEC_FILE,
            subspace=table,
        )

    public = generate_public_archive(tmp_path / "public", patients=4)
    with pytest.raises(SiteConfigError, match=r"\[subspace.public_archive\] must not be the site"):
        config(public_archive=str(archive))
    with pytest.raises(SiteConfigError, match=r"\[subspace.records\] must be at least directions"):
        config(public_archive=str(public), directions=64, records=32)
    with pytest.raises(SiteConfigError, match=r"\[subspace.directions\] must be at least 1"):
        config(public_archive=str(public), directions=0)
    with pytest.raises(SiteConfigError, match=r"is not a directory"):
        config(public_archive=str(tmp_path / "absent"))
    loaded = load_site_config(config(public_archive=str(public)))
    assert loaded.subspace == SubspaceConfig(public.resolve(), directions=128, records=256)
    assert loaded.subspace.by_task


def test_record_gradients_are_each_records_own(tiny_spec) -> None:
    """Packed into micro-batches of two, each row is its record's gradient alone."""
    torch.manual_seed(0)
    trainer = instruct_trainer(tiny_spec, init_lora_weights=False)
    adapter, processor = trainer.adapter, trainer.processor
    samples, _ = site_samples()
    rows = trainer.record_gradients(
        samples, TrainConfig(steps=1, sample_rate=1.0, physical_batch_size=2)
    )
    parameters = [p for _, p in adapter.trainable_parameters()]
    assert rows.shape == (len(samples), sum(p.numel() for p in parameters))
    brute = unit_gradients_brute_force(
        _double_copy(adapter, tiny_spec),
        trainer.encode(samples),
        list(range(len(samples))),
        processor.tokenizer.pad_token_id,
    )
    expected = torch.stack([torch.cat([g.flatten() for g in grads]) for grads in brute]).float()
    relative = (rows - expected).norm(dim=1) / expected.norm(dim=1)
    assert relative.max() < 1e-4  # float32 against a float64 brute force
    assert (expected.norm(dim=1) > 0).all()
    assert all(p.grad is None for p in parameters)
