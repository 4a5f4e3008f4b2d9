"""A real site's round against its ledger: refused when the ledger is gone or cut, and a crash
between training and reply counts the round, in a second process that really dies."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from client.config import load_site_config
from client.privacy import PrivacyLedger
from client.privacy.accounting import epsilon_for
from client.refusal import SiteRefusal
from protocol import Refusal
from server.coordinator import initial_arrays
from shared_model.spec import ModelSpec
from shared_model.tiny import SPEC_FILE
from simulations.runner import write_site_config
from simulations.synthetic import generate_consortium

CRASH_EXIT = 17


def train_config(fingerprint: str, server_round: int = 1) -> dict:
    """A small train request as the coordinator sends it."""
    return {
        "stage": "instruct",
        "fingerprint": fingerprint,
        "run-id": "test-run",
        "lr": 1e-2,
        "local-steps": 2,
        "batch-size": 2,
        "dp": True,
        "noise-multiplier": 1.0,
        "max-grad-norm": 1.0,
        "physical-batch-size": 4,
        "rounds-left": 1,
        "server-round": server_round,
    }


def small_site(tmp_path: Path, tiny_base: Path, patients: int = 6, **policy) -> Path:
    """The config of one synthetic hospital of ``patients`` (budget epsilon 50), with any
    further ``policy`` options of :func:`~simulations.runner.write_site_config`."""
    archive = generate_consortium(tmp_path / "archives", n_sites=1, patients=patients, seed=5)[0]
    return write_site_config(
        tmp_path / "site.toml",
        name=archive.name,
        archive=archive,
        work_dir=tmp_path / "work",
        model_spec=tiny_base / SPEC_FILE,
        max_epsilon=50.0,
        **policy,
    )


@pytest.fixture
def site_config(tmp_path: Path, tiny_base: Path) -> Path:
    return small_site(tmp_path, tiny_base)


def _train(site_path: str, crash_before_settling: bool) -> None:
    """Run one real round at the site; optionally die right after training, before the ledger
    is settled and before any reply could be sent."""
    from client.rounds import train_round
    from client.site import Site

    site = Site(load_site_config(site_path), progress=False)
    if crash_before_settling:
        site.ledger.settle = lambda *args, **kwargs: os._exit(CRASH_EXIT)
    arrays = initial_arrays(site.spec, "instruct", 0, None)
    train_round(site, arrays, train_config(site.fingerprint))


def test_a_crash_between_training_and_reply_over_counts(site_config: Path) -> None:
    context = multiprocessing.get_context("spawn")
    worker = context.Process(target=_train, args=(str(site_config), True))
    worker.start()
    worker.join(timeout=300)
    assert worker.exitcode == CRASH_EXIT

    ledger = PrivacyLedger(load_site_config(site_config).ledger_path)
    (entry,) = ledger.entries()
    assert not entry.settled and entry.steps == 2 and entry.noise_multiplier == 1.0
    counted = ledger.epsilon(delta=1e-5)
    assert counted == pytest.approx(epsilon_for([entry.mechanism], delta=1e-5)) and counted > 0


def test_a_deleted_or_cut_ledger_makes_the_site_refuse(site_config: Path, tiny_base: Path) -> None:
    from client.rounds import train_round
    from client.site import Site

    config = load_site_config(site_config)
    site = Site(config, progress=False)
    fingerprint = ModelSpec.from_toml(tiny_base / SPEC_FILE).fingerprint()
    arrays = initial_arrays(site.spec, "instruct", 0, None)
    train_round(site, arrays, train_config(fingerprint))
    trained = config.ledger_path.read_bytes()

    config.ledger_path.write_bytes(trained[: trained.rindex(b"\n", 0, -1) + 1])  # last line cut
    with pytest.raises(SiteRefusal) as refused:
        train_round(site, arrays, train_config(fingerprint, 2))
    assert refused.value.code is Refusal.LEDGER_DAMAGED

    config.ledger_path.unlink()
    with pytest.raises(SiteRefusal) as refused:
        train_round(site, arrays, train_config(fingerprint, 2))
    assert refused.value.code is Refusal.LEDGER_MISSING
    assert not config.ledger_path.exists()  # nothing re-created it: a person must act
