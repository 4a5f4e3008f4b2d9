"""Server aggregation against hand computation, and against Flower's own FedAvg; memory that
does not grow with the number of replies; an aggregate that is not finite never becomes the
global model."""

from __future__ import annotations

import gc
import tracemalloc
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.serverapp import strategy as flower

from protocol import ARRAYS, CONFIG, STATUS_REFUSED, from_record, to_record
from server.aggregation import trim_count
from server.checkpoints import Checkpoint, latest_checkpoint, save_checkpoint
from server.config import RUN_DEFAULTS, RunConfig
from server.coordinator import Coordinator
from server.rules import AggregationRule, FedAdam, FedAvg, FedProx, Median, TrimmedMean
from server.run_folder import RunFolder
from server.strategy import FedUmitStrategy, NonFiniteAggregate, RoundFailed
from shared_model.spec import ModelSpec
from tests.server_fixtures import (
    SiteGrid,
    random_arrays,
    reply,
    reply_content,
    round_config,
    run_round,
    serverapp_identity,
)


@pytest.fixture(autouse=True)
def _serverapp() -> Iterator[None]:
    with serverapp_identity():
        yield


def unbounded(rule: AggregationRule | None = None, **settings) -> FedUmitStrategy:
    """A strategy without the update bound (0, as a coordinator may choose): these tests check
    arithmetic on hand-sized numbers, updates far larger than any training round's."""
    return FedUmitStrategy(rule, max_update_norm=0.0, **settings)


def arrays(a: list, b: list) -> OrderedDict[str, np.ndarray]:
    return OrderedDict(
        (("layer.lora_A", np.array(a, np.float32)), ("merger.weight", np.array(b, np.float32)))
    )


CURRENT = arrays([[0, 0], [0, 0]], [0, 0, 0])
REPLIES = [  # (arrays, num-examples, train-loss)
    (arrays([[1, 2], [3, 4]], [1, 1, 1]), 1, 1.0),
    (arrays([[4, 4], [4, 4]], [0, 3, 6]), 2, 2.0),
    (arrays([[0, 0], [8, -8]], [2, 2, 2]), 5, 0.0),
]


def grid_of(replies) -> SiteGrid:
    """Node ``10 + i`` answers with ``replies[i]``."""
    return SiteGrid(
        {
            10 + i: (lambda m, r=r, n=n, loss=loss: reply_content(r, n, m, loss=loss))
            for i, (r, n, loss) in enumerate(replies)
        }
    )


@pytest.mark.parametrize("rule", [FedAvg(), FedProx(proximal_mu=0.01)], ids=["fedavg", "fedprox"])
def test_fedavg_is_the_example_weighted_mean(rule: AggregationRule) -> None:
    strategy = unbounded(rule, min_sites=3, min_available_sites=3)
    result, log = run_round(strategy, grid_of(REPLIES), CURRENT)
    # (1 * r1 + 2 * r2 + 5 * r3) / 8, by hand
    assert list(result) == list(CURRENT)
    np.testing.assert_allclose(result["layer.lora_A"], [[1.125, 1.25], [6.375, -3.5]], rtol=1e-7)
    np.testing.assert_allclose(result["merger.weight"], [1.375, 2.125, 2.875], rtol=1e-7)
    assert result["merger.weight"].dtype == np.float32
    assert log.train_loss == pytest.approx((1 * 1.0 + 2 * 2.0 + 5 * 0.0) / 8)
    assert sorted(log.sites) == ["site-10", "site-11", "site-12"]


def test_fedavg_matches_flower_fedavg_on_the_same_messages() -> None:
    shapes = {"a": (16, 8), "b": (8,), "c": (3, 4, 5)}
    sites = {n: random_arrays(shapes, seed=n) for n in (1, 2, 3, 4)}
    grid = SiteGrid({n: (lambda m, n=n: reply_content(sites[n], n * 3, m)) for n in sites})
    current = random_arrays(shapes, seed=99)
    ours, _ = run_round(unbounded(min_sites=4, min_available_sites=4), grid, current)

    messages = FedUmitStrategy().configure_train(1, to_record(current), round_config(), grid)
    replies = grid.send_and_receive(messages)
    for answer in replies:  # Flower's FedAvg averages arrays one by one: unpack them for it
        unpacked = from_record(answer.content[ARRAYS])
        answer.content[ARRAYS] = ArrayRecord(
            OrderedDict((n, Array(a)) for n, a in unpacked.items())
        )
    theirs, _ = flower.FedAvg().aggregate_train(1, replies)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value.numpy(), rtol=1e-5, atol=1e-6)


def test_median_is_coordinate_wise_and_ignores_weights() -> None:
    strategy = unbounded(Median(), min_sites=3, min_available_sites=3)
    result, _ = run_round(strategy, grid_of(REPLIES), CURRENT)
    np.testing.assert_array_equal(result["layer.lora_A"], [[1, 2], [4, 4]])
    np.testing.assert_array_equal(result["merger.weight"], [1, 2, 2])


def test_trimmed_mean_drops_the_extremes_of_each_coordinate() -> None:
    columns = [[100, 5], [1, 7], [2, 6], [3, -1], [-50, 30]]  # one row per site
    replies = [(OrderedDict(w=np.array(c, np.float32)), 1, 0.0) for c in columns]
    strategy = unbounded(TrimmedMean(trim_fraction=0.2), min_sites=5)
    result, _ = run_round(strategy, grid_of(replies), OrderedDict(w=np.zeros(2, np.float32)))
    # coordinate 0 keeps 1, 2, 3; coordinate 1 keeps 5, 6, 7
    np.testing.assert_allclose(result["w"], [2.0, 6.0])


def test_trimmed_mean_of_three_sites_trims_one_per_end_and_is_their_median() -> None:
    """``int(0.1 * 3)`` is 0: before, three sites were plainly averaged."""
    trimmed, _ = run_round(unbounded(TrimmedMean(), min_sites=3), grid_of(REPLIES), CURRENT)
    median, _ = run_round(unbounded(Median(), min_sites=3), grid_of(REPLIES), CURRENT)
    for name in CURRENT:
        np.testing.assert_array_equal(trimmed[name], median[name])


@pytest.mark.parametrize(
    "replies, fraction, cut",
    [(2, 0.1, 0), (3, 0.1, 1), (9, 0.1, 1), (10, 0.1, 1), (20, 0.1, 2), (3, 0.0, 1), (25, 0.2, 5)],
)
def test_trim_count_is_the_fraction_and_at_least_one_from_three_replies(
    replies: int, fraction: float, cut: int
) -> None:
    assert trim_count(replies, fraction) == cut


def test_fedadam_one_step_by_hand() -> None:
    replies = [
        (OrderedDict(w=np.array([0.4, 1.0], np.float32)), 4, 0.0),
        (OrderedDict(w=np.array([0.6, 0.8], np.float32)), 4, 0.0),
    ]
    adam = FedAdam(server_lr=0.1)
    result, _ = run_round(
        FedUmitStrategy(adam), grid_of(replies), OrderedDict(w=np.array([0.0, 1.0], np.float32))
    )
    # mean [0.5, 0.9]; delta [0.5, -0.1]; m = 0.1 delta = [0.05, -0.01];
    # v = 0.01 delta^2 -> sqrt(v) = [0.05, 0.01]; step = 0.1 m / (sqrt(v) + 1e-3)
    np.testing.assert_allclose(
        result["w"], [0.1 * 0.05 / 0.051, 1.0 - 0.1 * 0.01 / 0.011], rtol=1e-6
    )
    np.testing.assert_allclose(adam.m["w"], [0.05, -0.01], rtol=1e-6)
    np.testing.assert_allclose(adam.v["w"], [0.0025, 0.0001], rtol=1e-5)


SHAPES = {"lora_A": (256, 1024), "lora_B": (1024, 512), "merger": (256, 1024)}  # 4 MiB
REPLY_BYTES = 4 * sum(int(np.prod(s)) for s in SHAPES.values())


def peak_while_aggregating(replies: int) -> int:
    """Peak traced bytes of one round whose replies arrive, and are dropped, one by one."""
    grid = SiteGrid({n: None for n in range(2, replies + 2)})  # node 1 is the SuperLink's id
    strategy = FedUmitStrategy(min_sites=replies, min_available_sites=replies)  # bound on
    current = random_arrays(SHAPES, seed=0, scale=0.01)
    messages = strategy.configure_train(1, to_record(current), round_config(), grid)

    def arriving() -> Iterator[Message]:
        for message in messages:
            node = message.metadata.dst_node_id
            update = random_arrays(SHAPES, seed=node, scale=0.01)
            yield reply(message, reply_content(update, node, message))

    gc.collect()
    gc.disable()  # what is freed must be freed at once, not whenever the cycle collector runs
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        result = strategy.aggregate_train(1, arriving())
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
        gc.enable()
    assert result.arrays is not None and len(result.log.sites) == replies
    return peak


def test_streaming_memory_does_not_grow_with_the_number_of_replies() -> None:
    few, many = peak_while_aggregating(4), peak_while_aggregating(32)
    # holding the 32 replies alone would take 32 * REPLY_BYTES
    assert many < few * 1.2, (few / REPLY_BYTES, many / REPLY_BYTES)
    assert many < 8 * REPLY_BYTES, many / REPLY_BYTES


TOP = float(np.finfo(np.float32).max)


def at_the_top(sites: int) -> SiteGrid:
    """Sites whose arrays are all the largest float32: finite, but their sum overflows."""
    top = OrderedDict(w=np.full(3, TOP, np.float32))
    return SiteGrid({n: (lambda m: reply_content(top, 4, m)) for n in range(1, sites + 1)})


@pytest.mark.parametrize("rule, sites", [(Median(), 2), (TrimmedMean(), 4)])
def test_an_overflowing_aggregate_fails_the_round_naming_the_array(
    rule: AggregationRule, sites: int
) -> None:
    """The two middle values of each coordinate are averaged in float32, and overflow."""
    strategy = unbounded(rule, min_sites=sites, min_available_sites=sites)
    with np.errstate(over="ignore"), pytest.raises(NonFiniteAggregate) as raised:
        run_round(strategy, at_the_top(sites), OrderedDict(w=np.zeros(3, np.float32)))
    assert isinstance(raised.value, RoundFailed)
    assert str(raised.value) == (
        "round 1: the aggregate of array 'w' holds NaN or infinite values; the global model is kept"
    )


def test_fedadam_keeps_its_moments_when_its_step_overflows() -> None:
    """A failed round is retried from the same server state, not from moments it spoilt."""
    adam = FedAdam(server_lr=1e39)
    current = OrderedDict(w=np.full(3, TOP / 2, np.float32))
    with np.errstate(over="ignore"), pytest.raises(NonFiniteAggregate):
        run_round(unbounded(adam), at_the_top(2), current)
    assert adam.m == {} and adam.v == {} and adam.state_dict() == {}


def test_a_failed_round_leaves_the_last_good_global_model_and_checkpoint(tmp_path) -> None:
    """Through the coordinator: the round is retried, then the run stops at round 1's
    checkpoint, which nothing overwrote, with the reason in metrics.jsonl."""
    from safetensors.numpy import save_file

    (tmp_path / "base").mkdir()
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "base" / "model.safetensors"))
    spec = ModelSpec(base=tmp_path / "base")
    folder = RunFolder(tmp_path / "run").create({})
    good = OrderedDict(w=np.array([1.0, 2.0, 3.0], np.float32))
    last = Checkpoint("align", 1, spec.fingerprint(), folder.run_id, good, {})
    save_checkpoint(folder.checkpoints, last)
    config = RunConfig.from_flat(
        {
            **RUN_DEFAULTS,
            "aggregation": "median",
            "max-update-norm": 0.0,
            "align.rounds": 2,
            "stop-after-align": True,
        }
    )
    with np.errstate(over="ignore"):
        outcome = Coordinator(config, spec, folder).run(at_the_top(2))

    assert not outcome.completed
    assert "the aggregate of array 'w' holds NaN or infinite values" in outcome.stopped_reason
    kept = latest_checkpoint(folder.checkpoints, "align", spec.fingerprint())
    assert kept.server_round == 1
    np.testing.assert_array_equal(kept.arrays["w"], good["w"])
    assert folder.metrics()[-1] == {"stage": "align", "round": 2, "failed": outcome.stopped_reason}


def test_a_stage_no_site_can_train_is_skipped_and_the_run_goes_on(tmp_path, tiny_spec) -> None:
    """Every site answers ``no-records`` in align's first round: align is skipped with its
    reason in metrics.jsonl, and instruct trains over the base as it is."""

    def site(message: Message) -> RecordDict:
        if message.content[CONFIG]["stage"] == "align":
            return reply_content(None, 0, message, status=STATUS_REFUSED, reason="no-records")
        return reply_content(from_record(message.content[ARRAYS]), 20, message)

    config = RunConfig.from_flat(
        {**RUN_DEFAULTS, "align.rounds": 2, "instruct.rounds": 1, "eval-at-start": False,
         "eval-every": 0, "retries": 0}
    )  # fmt: skip
    folder = RunFolder(tmp_path / "run").create({})
    grid = SiteGrid({1: site, 2: site})
    outcome = Coordinator(config, tiny_spec, folder).run(grid)

    assert outcome.completed and outcome.skipped == ["align"]
    assert set(outcome.arrays) == {"instruct"}
    skipped = [r for r in folder.metrics() if "skipped" in r]
    assert [(r["stage"], r["round"]) for r in skipped] == [("align", 1)]
    assert "no site holds usable align training records" in skipped[0]["skipped"]
