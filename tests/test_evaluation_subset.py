"""A site's cap on the records one evaluation scores: a fixed subset that the records' ids
alone decide, and a policy key that refuses a negative cap."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from client.config import SiteConfigError, load_site_config
from client.disclosure import evaluation_subset
from shared_model.sample import Sample


def records(count: int, task: str = "vqa", first: int = 0) -> list[Sample]:
    """``count`` image-less records ``r{first}``, ``r{first + 1}``, ... of ``task``."""
    return [
        Sample(f"r{i}", f"p{i}", task, "en", "val", (), ()) for i in range(first, first + count)
    ]


def ids(samples: list[Sample]) -> list[str]:
    return [s.record_id for s in samples]


def test_no_cap_or_few_records_scores_every_record() -> None:
    split = records(30)
    assert ids(evaluation_subset(split, 0)) == ids(split)
    assert ids(evaluation_subset(split, 30)) == ids(split)


def test_the_subset_is_the_same_whatever_order_the_archive_lists() -> None:
    split = records(200)
    kept = evaluation_subset(split, 50)
    assert len(kept) == 50
    positions = [ids(split).index(i) for i in ids(kept)]
    assert positions == sorted(positions)  # the split's own order
    shuffled = random.Random(0).sample(split, len(split))
    assert sorted(ids(evaluation_subset(shuffled, 50))) == sorted(ids(kept))
    assert ids(kept) != ids(split[:50])  # not the first records listed


def test_the_subset_samples_every_kind_of_record_about_evenly() -> None:
    split = records(500, "vqa") + records(500, "classification", first=500)
    kept = evaluation_subset(split, 200)
    share = sum(s.task == "vqa" for s in kept) / len(kept)
    assert 0.38 < share < 0.62  # 100 expected; the bounds are 3.4 standard deviations away


def test_a_negative_cap_is_refused_and_names_its_key(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    text = (
        '[site]\nname = "a"\narchive = "archive"\nwork_dir = "work"\n'
        "[policy]\nmax_eval_records = {}\n"
    )
    config.write_text(text.format(300))
    assert load_site_config(config).policy.max_eval_records == 300
    config.write_text(text.format(-1))
    with pytest.raises(SiteConfigError, match=r"\[policy\.max_eval_records\]"):
        load_site_config(config)


def test_a_site_reads_its_training_and_evaluation_splits_in_one_pass(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import client.archive
    from client.archive import load_site_samples
    from client.site import Site
    from shared_model.spec import SPEC_FILE
    from simulations.runner import write_site_config
    from simulations.synthetic import generate_consortium

    (archive,) = generate_consortium(tmp_path / "archives", n_sites=1, patients=20, seed=1)
    config = load_site_config(
        write_site_config(
            tmp_path / "site.toml",
            name=archive.name,
            archive=archive,
            work_dir=tmp_path / "work",
            model_spec=tiny_base / SPEC_FILE,
        )
    )
    site = Site(config, progress=False)
    reads = []
    monkeypatch.setattr(
        client.archive,
        "load_site_samples",
        lambda *args, **kwargs: (
            reads.append(kwargs["splits"]) or load_site_samples(*args, **kwargs)
        ),
    )
    train = site.samples("train", "instruct")
    val = site.samples("val", "instruct")
    assert site.samples("val", "align") and reads == [["train", "val"]]
    alone, _ = load_site_samples(
        config, canvas=site.spec.canvas, slices=site.spec.volume_slices, splits=("val",)
    )
    assert ids(val) == [s.record_id for s in alone if s.task in {t.task for t in train}]
    assert {s.split for s in train} == {"train"}
