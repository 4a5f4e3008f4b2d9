"""Sites by name: the name registered for a node's key wins, a site's configured name serves
where none is registered; each round's log, metrics.jsonl and the model card name sites and
count bytes per site, training and evaluation apart."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict

from protocol import to_record
from server.checkpoints import Checkpoint, save_checkpoint
from server.config import RUN_DEFAULTS, RunConfig
from server.coordinator import Coordinator
from server.model_card import model_card
from server.run_folder import RunFolder
from server.strategy import FedUmitStrategy
from shared_model.spec import ModelSpec
from tests.server_fixtures import (
    SiteGrid,
    evaluation_content,
    random_arrays,
    reply_content,
    round_config,
    run_round,
    serverapp_identity,
)

SHAPES = {"q.lora_A": (4, 6), "merger.weight": (5,)}
CURRENT = random_arrays(SHAPES, seed=0, scale=0.1)


@pytest.fixture(autouse=True)
def _serverapp() -> Iterator[None]:
    with serverapp_identity():
        yield


def site(claim: str | None = None, examples: int = 4) -> Callable[[Message], RecordDict]:
    """A site that trains (a small update) and evaluates; ``claim`` overrides its meta ``site``
    (``None``: the fixtures' ``site-<node>``)."""
    meta = {} if claim is None else {"site": claim}

    def answer(message: Message) -> RecordDict:
        if message.metadata.message_type == "evaluate":
            scores = {"vqa/en/closed_accuracy": 0.5, "vqa/en/closed_count": 40.0}
            content = evaluation_content(message, {"num-examples": 40.0, **scores})
            content["meta"].update(meta)
            return content
        update = random_arrays(SHAPES, seed=examples, scale=0.01)
        arrays = OrderedDict((n, CURRENT[n] + update[n]) for n in CURRENT)
        return reply_content(arrays, examples, message, **meta)

    return answer


def test_registered_names_win_configured_names_serve_otherwise(caplog) -> None:
    grid = SiteGrid(
        {
            2: site(),  # no registered name: its config's
            3: site("impostor"),  # registered as hospital-b: that name, with a warning
            4: site("site-7"),  # another node's registered name: its node id
            5: site("bad name|"),  # not a site name: its node id
            6: lambda m: Error(code=1, reason="crashed"),  # never answered
            7: site(),
        },
        registered={3: "hospital-b", 7: "site-7"},
    )
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=6)
    with caplog.at_level(logging.WARNING, logger="server.sites"):
        _, log = run_round(strategy, grid, CURRENT)
    assert sorted(log.sites) == ["hospital-b", "node 4", "node 5", "site-2", "site-7"]
    assert list(log.rejected) == ["node 6"]
    assert "node 3 says it is site 'impostor', but it is registered as 'hospital-b'" in caplog.text
    assert "node 4 says it is site 'site-7', but another node goes by that name" in caplog.text
    assert "node 5 says it is site 'bad name|', but that is not a site name" in caplog.text
    assert strategy.sites.describe(3) == "hospital-b (node 3)"


def test_bytes_are_counted_per_site_for_training_and_evaluation_apart() -> None:
    stage1 = random_arrays({"align.w": (64,)}, seed=1)
    grid = SiteGrid({2: site(), 3: site()})
    strategy = FedUmitStrategy(min_sites=2)
    strategy.set_stage1(stage1, "abc")
    arrays = to_record(CURRENT)
    adapter, stage1_bytes = arrays.count_bytes(), to_record(stage1).count_bytes()
    trained = run_round(strategy, grid, CURRENT)[1]
    assert trained.sent == {"site-2": adapter + stage1_bytes, "site-3": adapter + stage1_bytes}
    assert trained.received == {"site-2": adapter, "site-3": adapter}

    strategy.node_stage1[3] = "abc"  # site 3 reports it holds the stage-1 adapter
    messages = strategy.configure_evaluate(2, arrays, round_config(), grid)
    evaluated = strategy.aggregate_evaluate(2, grid.send_and_receive(messages)).log
    assert evaluated.sent == {"site-2": adapter + stage1_bytes, "site-3": adapter}
    assert evaluated.received == {"site-2": 0, "site-3": 0}  # scores only
    assert sorted(evaluated.sites) == ["site-2", "site-3"] and not evaluated.epsilon


@pytest.fixture
def run(tmp_path: Path) -> tuple[RunFolder, ModelSpec]:
    """A run folder whose align round 1 is checkpointed: the coordinator goes on at round 2."""
    from safetensors.numpy import save_file

    (tmp_path / "base").mkdir()
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "base" / "model.safetensors"))
    spec = ModelSpec(base=tmp_path / "base")
    folder = RunFolder(tmp_path / "run").create({})
    first = Checkpoint("align", 1, spec.fingerprint(), folder.run_id, dict(CURRENT), {})
    save_checkpoint(folder.checkpoints, first)
    return folder, spec


def test_metrics_and_the_model_card_name_each_site_with_its_delta(run) -> None:
    folder, spec = run
    grid = SiteGrid({2: site(examples=4), 3: site(examples=6)}, registered={3: "hospital-b"})
    config = RunConfig.from_flat({**RUN_DEFAULTS, "align.rounds": 2, "stop-after-align": True})
    outcome = Coordinator(config, spec, folder).run(grid)
    assert outcome.completed

    record = folder.metrics()[-1]
    names = ["hospital-b", "site-2"]
    assert sorted(record["sites"]) == sorted(record["eval_sites"]) == names
    assert record["epsilon"] == {"site-2": 1.0, "hospital-b": 1.0}
    assert record["delta"] == {"site-2": 1e-5, "hospital-b": 1e-5}
    assert sorted(record["site_seconds"]) == names
    for direction in ("bytes_sent", "bytes_received"):
        assert sorted(record[direction]) == ["evaluate", "train"]
        assert all(sorted(per_site) == names for per_site in record[direction].values())
    assert record["eval"] == {"vqa/en/closed_accuracy": 0.5}

    card = model_card(
        run_id="r", base="b", fingerprint="f", records=folder.metrics(), config=config.to_dict()
    )
    assert "| hospital-b | 1.000 | 1e-05 |" in card and "| site-2 | 1.000 | 1e-05 |" in card
    assert "sites that contributed: 2 (hospital-b, site-2)" in card
    assert "per site policy" not in card
