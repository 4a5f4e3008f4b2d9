"""Bad replies are rejected with a logged reason while the round completes with the rest."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from flwr.app import Array, ConfigRecord, Error, Message, RecordDict

from protocol import ARRAYS, METRICS, STATUS_REFUSED, to_record
from server.aggregation import update_rms
from server.config import DEFAULT_MAX_NUM_EXAMPLES, RUN_DEFAULTS
from server.rounds import stream_replies
from server.strategy import FedUmitStrategy, TooFewReplies
from server.validation import Expectation, check_arrays
from tests.server_fixtures import (
    FINGERPRINT,
    STAGE,
    SiteGrid,
    evaluation_content,
    random_arrays,
    reply_content,
    round_config,
    run_round,
    serverapp_identity,
)

SHAPES = {"q.lora_A": (4, 6), "q.lora_B": (6, 4), "merger.weight": (5,)}
CURRENT = random_arrays(SHAPES, seed=0)


@pytest.fixture(autouse=True)
def _serverapp() -> Iterator[None]:
    with serverapp_identity():
        yield


def near(seed: int) -> OrderedDict[str, np.ndarray]:
    """A small, valid update of ``CURRENT``."""
    noise = random_arrays(SHAPES, seed=seed, scale=0.1)
    return OrderedDict((n, CURRENT[n] + noise[n]) for n in CURRENT)


def with_nan(m: Message) -> RecordDict:
    arrays = near(3)
    arrays["q.lora_B"][2, 1] = np.nan
    return reply_content(arrays, 4, m)


def reshaped(m: Message) -> RecordDict:
    arrays = near(4)
    arrays["q.lora_A"] = arrays["q.lora_A"][:, :5].copy()
    return reply_content(arrays, 4, m)


def oversized(m: Message) -> RecordDict:
    return reply_content(OrderedDict((n, a + 5.0) for n, a in CURRENT.items()), 4, m)


def undecodable(m: Message) -> RecordDict:
    content = reply_content(near(11), 4, m)
    content[ARRAYS]["q.lora_A"] = Array(
        dtype="float32", shape=(4, 6), stype="numpy.ndarray", data=b"not an array"
    )
    return content


def arrays_as_config(m: Message) -> RecordDict:
    content = reply_content(None, 4, m)
    content[ARRAYS] = ConfigRecord({"q.lora_A": 1.0})
    return content


def good(seed: int, examples: int) -> Callable[[Message], RecordDict]:
    return lambda m: reply_content(near(seed), examples, m)


def with_examples(examples: object) -> Callable[[Message], RecordDict]:
    """A valid update whose ``num-examples`` is ``examples``, as a site could put it on the wire."""

    def site(m: Message) -> RecordDict:
        content = reply_content(near(12), 4, m)
        content[METRICS]["num-examples"] = examples
        return content

    return site


BAD_SITES: dict[str, tuple[Callable[[Message], RecordDict | Error], str]] = {
    "nan": (with_nan, "'q.lora_B' holds NaN or infinite values"),
    "shape": (reshaped, "'q.lora_A' has shape (4, 5), expected (4, 6)"),
    "fingerprint": (
        lambda m: reply_content(near(5), 4, m, fingerprint="ffffffffffffffff"),
        "fingerprint 'ffffffffffffffff' does not match",
    ),
    "norm": (oversized, "exceeds the bound 1 (run config max-update-norm)"),
    "dtype": (
        lambda m: reply_content({n: a.astype(np.float64) for n, a in near(6).items()}, 4, m),
        "has dtype float64, expected float32",
    ),
    "names": (
        lambda m: reply_content({"x." + n: a for n, a in near(7).items()}, 4, m),
        "array names differ",
    ),
    "stage": (lambda m: reply_content(near(8), 4, m, stage="align"), "stage 'align'"),
    "round": (lambda m: reply_content(near(9), 4, m, **{"server-round": 3}), "server-round 3"),
    "examples": (lambda m: reply_content(near(10), 0, m), "num-examples 0 is outside [1, "),
    "no arrays": (lambda m: reply_content(None, 4, m), "reply lacks arrays"),
    "arrays as config": (arrays_as_config, "reply lacks arrays"),
    "undecodable": (undecodable, "arrays do not decode (ValueError"),
    "flower error": (lambda m: Error(code=1, reason="node crashed"), "node crashed"),
}


def test_each_bad_reply_is_rejected_with_its_reason_and_the_round_completes(caplog) -> None:
    bad = {20 + i: site for i, site in enumerate(BAD_SITES.values())}
    grid = SiteGrid({1: good(1, 2), 2: good(2, 6), **{n: site for n, (site, _) in bad.items()}})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=2)  # default bounds
    with caplog.at_level(logging.WARNING, logger="server.strategy"):
        result, log = run_round(strategy, grid, CURRENT)

    one, two = near(1), near(2)
    for name in CURRENT:
        np.testing.assert_allclose(result[name], (2 * one[name] + 6 * two[name]) / 8, rtol=1e-6)
    assert sorted(log.sites) == ["site-1", "site-2"]
    names = strategy.sites
    assert set(log.rejected) == {names.name(node) for node in bad}
    for node, (_, reason) in bad.items():
        assert reason in log.rejected[names.name(node)]
        assert any(
            f"of {names.describe(node)} in round 1" in r.getMessage() and reason in r.getMessage()
            for r in caplog.records
        ), reason


class GridWithAnOfflineSite(SiteGrid):
    """Site 3 went offline: the SuperLink answers its message with Flower's own error."""

    def pull_messages(self, message_ids) -> Iterator[Message]:
        from flwr.server.superlink.linkstate.utils import (
            create_message_error_unavailable_res_message,
        )

        for message_id in message_ids:
            if self.pushed[message_id].metadata.dst_node_id == 3:
                sent = self.pushed.pop(message_id)
                yield create_message_error_unavailable_res_message(sent.metadata, "node_unavail")
            else:
                yield from super().pull_messages([message_id])


def test_a_site_gone_offline_is_rejected_under_its_own_node_id() -> None:
    grid = GridWithAnOfflineSite({1: good(1, 2), 2: good(2, 6), 3: good(3, 4)})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=3)
    _, log = run_round(strategy, grid, CURRENT)
    assert sorted(log.sites) == ["site-1", "site-2"]
    assert list(log.rejected) == ["node 3"]  # it never answered, so only its node id is known
    assert "Node Unavailable" in log.rejected["node 3"]


def test_a_refusal_is_an_answer_not_a_rejection(caplog) -> None:
    refusal = "privacy budget exhausted: epsilon 8.2 > 8.0"

    def refusing(m: Message) -> RecordDict:
        return reply_content(None, 0, m, status=STATUS_REFUSED, reason=refusal)

    grid = SiteGrid({1: good(1, 2), 2: good(2, 6), 3: refusing})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=3)
    with caplog.at_level(logging.WARNING, logger="server.strategy"):
        _, log = run_round(strategy, grid, CURRENT)
    assert log.refused == {"site-3": refusal}
    assert log.rejected == {}
    assert log.epsilon == {"site-1": 1.0, "site-2": 1.0, "site-3": 1.0}
    assert f"site-3 (node 3) refused round 1: {refusal}" in caplog.text


def test_too_few_valid_replies_stop_the_round_naming_every_reason() -> None:
    grid = SiteGrid({1: good(1, 2), 2: with_nan, 3: reshaped})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=3)
    with pytest.raises(TooFewReplies) as raised:
        run_round(strategy, grid, CURRENT)
    assert (raised.value.valid, raised.value.minimum) == (1, 2)
    assert "site-2: array 'q.lora_B' holds NaN" in str(raised.value)
    assert "site-3: array 'q.lora_A' has shape" in str(raised.value)
    assert raised.value.log.sites == ["site-1"]


FROZEN_A = {"q.lora_A.weight": (4, 6), "q.lora_B.weight": (6, 4)}


def test_a_frozen_a_matrix_must_come_back_as_sent() -> None:
    """With ``frozen_a``, a site that changed an ``A`` matrix (by one part in a thousand) is
    left out of the round with the reason, and the global ``A`` stays exactly as it was; where
    the layout trains ``A`` the same reply counts."""
    current = random_arrays(FROZEN_A, seed=0)

    def site(seed: int, change_a: bool) -> Callable[[Message], RecordDict]:
        def reply(m: Message) -> RecordDict:
            arrays = OrderedDict((n, a.copy()) for n, a in current.items())
            arrays["q.lora_B.weight"] += random_arrays(FROZEN_A, seed, 0.1)["q.lora_B.weight"]
            if change_a:
                arrays["q.lora_A.weight"][0, 0] *= 1.001
            return reply_content(arrays, 4, m)

        return reply

    grid = SiteGrid({1: site(1, False), 2: site(2, False), 3: site(3, True)})
    frozen = FedUmitStrategy(min_available_sites=3, frozen_a_stages=frozenset({STAGE}))
    result, log = run_round(frozen, grid, current)
    assert log.rejected == {
        "site-3": "array 'q.lora_A.weight' is frozen in this stage's layout (frozen_a) "
        "but came back changed"
    }
    np.testing.assert_array_equal(result["q.lora_A.weight"], current["q.lora_A.weight"])
    _, log = run_round(FedUmitStrategy(min_available_sites=3), grid, current)
    assert log.rejected == {} and len(log.sites) == 3


def test_rejected_arrays_never_reach_the_mean() -> None:
    """A NaN reply that slipped through would poison every coordinate of the result."""
    grid = SiteGrid({1: good(1, 2), 2: good(2, 6), 3: with_nan, 4: oversized})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=4)
    result, _ = run_round(strategy, grid, CURRENT)
    assert all(np.isfinite(a).all() for a in result.values())
    assert max(float(np.abs(result[n] - CURRENT[n]).max()) for n in CURRENT) < 1.0


@pytest.mark.parametrize(
    "examples, reason",
    [
        (1e30, "num-examples 1e+30 is outside [1, 10000000]"),
        (float(DEFAULT_MAX_NUM_EXAMPLES + 1), "num-examples 10000001 is outside [1, 10000000]"),
        (float("nan"), "num-examples must be finite, got nan"),
        (float("inf"), "num-examples must be finite, got inf"),
        (-float("inf"), "num-examples must be finite, got -inf"),
        (2.5, "num-examples must be a whole number, got 2.5"),
        (-3.0, "num-examples -3 is outside [1, 10000000]"),
        ([4.0, 4.0], "num-examples must be a number, got list"),
    ],
)
def test_a_bad_num_examples_is_rejected_and_the_global_model_is_the_mean_of_the_others(
    examples: object, reason: str, caplog
) -> None:
    """Before: 1e30 made one reply the whole global model, NaN or inf made it all NaN."""
    grid = SiteGrid({1: good(1, 2), 2: good(2, 6), 3: with_examples(examples)})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=3)
    with caplog.at_level(logging.WARNING, logger="server.strategy"):
        result, log = run_round(strategy, grid, CURRENT)

    assert list(log.rejected) == ["site-3"] and reason in log.rejected["site-3"]
    assert f"rejected the reply of site-3 (node 3) in round 1: {reason}" in caplog.text
    one, two = near(1), near(2)
    for name in CURRENT:
        assert np.isfinite(result[name]).all()
        np.testing.assert_allclose(result[name], (2 * one[name] + 6 * two[name]) / 8, rtol=1e-6)


def test_num_examples_may_be_a_whole_float_or_an_int_up_to_the_run_configs_cap() -> None:
    grid = SiteGrid({1: with_examples(100.0), 2: with_examples(7), 3: with_examples(101.0)})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=3, max_num_examples=100)
    _, log = run_round(strategy, grid, CURRENT)
    assert sorted(log.sites) == ["site-1", "site-2"]
    assert log.rejected == {
        "site-3": "num-examples 101 is outside [1, 100] (run config max-num-examples)"
    }


def test_malformed_diagnostics_count_as_unknown_and_crash_nothing() -> None:
    """Loss, seconds and epsilon are only shown: a list or a NaN there leaves the reply valid,
    reads as NaN, and stays out of the round's mean train loss."""

    def odd(m: Message) -> RecordDict:
        content = reply_content(near(13), 4, m, loss=float("nan"))
        content[METRICS]["epsilon"] = [1.0, 2.0]
        content[METRICS]["seconds"] = [3.0]
        return content

    grid = SiteGrid({1: good(1, 2), 2: good(2, 6), 3: odd})
    strategy = FedUmitStrategy(min_sites=3, min_available_sites=3)
    _, log = run_round(strategy, grid, CURRENT)
    assert sorted(log.sites) == ["site-1", "site-2", "site-3"]
    assert log.train_loss == pytest.approx(0.5)
    assert math.isnan(log.epsilon["site-3"])
    assert math.isnan(log.seconds["site-3"])


def scores(accuracy: object, count: object) -> Callable[[Message], RecordDict]:
    """An evaluation reply with one group's accuracy and count."""
    return lambda m: evaluation_content(m, {"vqa/en/accuracy": accuracy, "vqa/en/count": count})


def test_evaluation_replies_with_unusable_group_counts_are_rejected_with_a_reason(caplog) -> None:
    bad = {
        3: (scores(0.0, 1e30), "vqa/en/count 1e+30 is outside [1, 10000000]"),
        4: (scores(0.0, float("nan")), "vqa/en/count must be finite, got nan"),
        5: (scores(0.0, float("inf")), "vqa/en/count must be finite, got inf"),
        6: (scores(0.0, 2.5), "vqa/en/count must be a whole number, got 2.5"),
    }
    grid = SiteGrid(
        {
            1: scores(0.5, 10.0),
            2: scores(0.8, 30.0),
            7: scores([1.0], 50.0),  # not a score: left out, the reply otherwise fine
            **{node: site for node, (site, _) in bad.items()},
        }
    )
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=len(grid.sites))
    messages = strategy.configure_evaluate(1, to_record(CURRENT), round_config(), grid)
    with caplog.at_level(logging.WARNING, logger="server.strategy"):
        result = strategy.aggregate_evaluate(1, stream_replies(grid, messages, timeout=30.0))

    expected = {"vqa/en/accuracy": (0.5 * 10 + 0.8 * 30) / 40}
    assert result.arrays is None and dict(result.metrics) == pytest.approx(expected)
    assert sorted(result.log.sites) == ["site-1", "site-2", "site-7"]
    for node, (_, reason) in bad.items():
        name = f"site-{node} (node {node})"
        assert f"rejected the evaluation of {name} in round 1: {reason}" in caplog.text
        assert reason in result.log.rejected[f"site-{node}"]


def test_a_sub_group_score_is_weighted_by_its_own_count() -> None:
    """``closed_accuracy`` is over the closed questions only: weighted by ``closed_count``."""

    def vqa(closed_accuracy: float, closed: float) -> Callable[[Message], RecordDict]:
        group = {"vqa/en/count": 40.0, "vqa/en/closed_count": closed}
        return lambda m: evaluation_content(m, {**group, "vqa/en/closed_accuracy": closed_accuracy})

    grid = SiteGrid({1: vqa(1.0, 10.0), 2: vqa(0.0, 30.0)})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=2)
    messages = strategy.configure_evaluate(1, to_record(CURRENT), round_config(), grid)
    result = strategy.aggregate_evaluate(1, stream_replies(grid, messages, timeout=30.0))
    assert dict(result.metrics) == pytest.approx({"vqa/en/closed_accuracy": 10 / 40})


# The largest update RMS measured on the tiny base (server/config.py): one round without DP at
# lr 1e-2 x 200 local steps; DP rounds of `fedumit simulate` stay below 0.03.
MEASURED_RMS = 0.048
SMALL = {"lora_A": (16, 64), "lora_B": (64, 16), "merger": (64, 64)}  # 6 K coordinates
LARGE = {"lora_A": (16, 1536), "lora_B": (8960, 16), "merger": (1536, 1536)}  # 2.5 M


@pytest.mark.parametrize("shapes, l2", [(SMALL, 7.5), (LARGE, 153.0)], ids=["small", "large"])
def test_the_default_update_bound_is_on_and_fits_training_at_any_adapter_size(
    shapes: dict, l2: float
) -> None:
    """An honest step twice the largest measured passes on both adapters, though its plain L2
    norm is 7.5 on the small one and 153 on the large one (Qwen2-VL-2B's adapters are twenty
    times larger still): no L2 bound fits both sizes, one bound per coordinate does."""
    assert FedUmitStrategy().max_update_norm == RUN_DEFAULTS["max-update-norm"] == 1.0
    adapter = random_arrays(shapes, seed=0, scale=0.03)  # a trained adapter's size
    expected = Expectation(FINGERPRINT, STAGE, 1, adapter)  # the defaults

    step = random_arrays(shapes, seed=1, scale=2 * MEASURED_RMS)
    honest = OrderedDict((n, a + step[n]) for n, a in adapter.items())
    assert check_arrays(honest, expected) is None
    coordinates = sum(math.prod(shape) for shape in shapes.values())
    assert update_rms(honest, adapter) * math.sqrt(coordinates) == pytest.approx(l2, rel=0.02)

    absurd = OrderedDict((n, 50 * a) for n, a in adapter.items())
    assert "exceeds the bound 1 (run config max-update-norm)" in check_arrays(absurd, expected)
    unbounded = Expectation(FINGERPRINT, STAGE, 1, adapter, max_update_norm=0.0)
    assert check_arrays(absurd, unbounded) is None
