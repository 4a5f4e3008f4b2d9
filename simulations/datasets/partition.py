"""Split a converted dataset across virtual hospitals at the patient level (flwr-datasets).

The partitioners see a Hugging Face ``Dataset`` with one row per patient (id, label,
modality), so all of a patient's records, whatever their split, land in exactly one site:

- ``iid``: patients shuffled and dealt evenly (``IidPartitioner``);
- ``dirichlet``: label proportions per site drawn from Dirichlet(``alpha``)
  (``DirichletPartitioner``);
- ``modality``: sites specialise by modality (``NaturalIdPartitioner`` on the modality column):
  with more sites than modalities the larger modalities are shared by several sites
  (``IidPartitioner`` within a modality), with fewer the smallest are merged into the least
  loaded site. Patients without a modality form a group of their own.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    NaturalIdPartitioner,
    Partitioner,
)

from simulations.datasets import PARTITIONS
from simulations.datasets.archive import PublicDataset


def patient_table(dataset: PublicDataset) -> Dataset:
    """One row per patient: ``patient_id``, ``label``, ``modality``."""
    modalities = dataset.modalities()
    patients = dataset.patients()
    return Dataset.from_dict(
        {
            "patient_id": patients,
            "label": [dataset.labels[p] for p in patients],
            "modality": [modalities[p] for p in patients],
        }
    )


def partition_patients(
    dataset: PublicDataset, sites: int, method: str = "iid", seed: int = 0, alpha: float = 0.5
) -> list[list[str]]:
    """The patient ids of each of ``sites`` hospitals."""
    table = patient_table(dataset)
    if sites < 1 or sites > len(table):
        raise ValueError(f"{dataset.name}: cannot split {len(table)} patients into {sites} sites")
    if method == "iid":
        return _ids(IidPartitioner(sites), table.shuffle(seed=seed))
    if method == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions=sites,
            partition_by="label",
            alpha=alpha,
            min_partition_size=max(1, min(10, len(table) // (4 * sites))),
            seed=seed,
        )
        return _ids(partitioner, table)
    if method == "modality":
        return _by_modality(table, sites, seed)
    raise ValueError(f"unknown partition {method!r}: use one of {list(PARTITIONS)}")


def write_sites(
    dataset: PublicDataset,
    out_dir: Path,
    *,
    sites: int,
    method: str = "iid",
    seed: int = 0,
    alpha: float = 0.5,
) -> list[Path]:
    """Write each hospital's archive as ``out_dir/<dataset>-<letter>``; return the folders."""
    groups = partition_patients(dataset, sites, method, seed, alpha)
    return [
        dataset.write_archive(out_dir / f"{dataset.name}-{chr(ord('a') + index)}", patients)
        for index, patients in enumerate(groups)
    ]


def _ids(partitioner: Partitioner, table: Dataset) -> list[list[str]]:
    partitioner.dataset = table
    return [
        list(partitioner.load_partition(i)["patient_id"]) for i in range(partitioner.num_partitions)
    ]


def _by_modality(table: Dataset, sites: int, seed: int) -> list[list[str]]:
    groups = sorted(_ids(NaturalIdPartitioner("modality"), table), key=len, reverse=True)
    if len(groups) < 2:
        raise ValueError("partition 'modality' needs at least two modalities; use iid or dirichlet")
    if sites <= len(groups):
        merged: list[list[str]] = [[] for _ in range(sites)]
        for group in groups:
            min(merged, key=len).extend(group)
        return merged
    shares = _shares([len(g) for g in groups], sites)
    result = []
    for group, share in zip(groups, shares, strict=True):
        subset = Dataset.from_dict({"patient_id": group}).shuffle(seed=seed)
        result += _ids(IidPartitioner(share), subset)
    if len(result) != sites:
        raise ValueError(f"modalities too small to fill {sites} sites; use fewer sites")
    return result


def _shares(sizes: list[int], sites: int) -> list[int]:
    """Sites per group: at least one each, the rest by largest remainder of size."""
    extra = sites - len(sizes)
    exact = [extra * size / sum(sizes) for size in sizes]
    shares = [1 + int(value) for value in exact]
    order = sorted(range(len(sizes)), key=lambda i: int(exact[i]) - exact[i])
    for index in order[: sites - sum(shares)]:
        shares[index] += 1
    return [min(share, size) for share, size in zip(shares, sizes, strict=True)]
