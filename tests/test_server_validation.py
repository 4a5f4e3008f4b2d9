"""Bad replies are rejected with a logged reason while the round completes with the rest."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict

from protocol import STATUS_REFUSED
from server.strategy import FedUmitStrategy, TooFewReplies
from tests.server_fixtures import (
    SiteGrid,
    random_arrays,
    reply_content,
    run_round,
    serverapp_identity,
)

SHAPES = {"q.lora_A": (4, 6), "q.lora_B": (6, 4), "merger.weight": (5,)}
CURRENT = random_arrays(SHAPES, seed=0)
BOUND = 10.0


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


def good(seed: int, examples: int) -> Callable[[Message], RecordDict]:
    return lambda m: reply_content(near(seed), examples, m)


BAD_SITES: dict[str, tuple[Callable[[Message], RecordDict | Error], str]] = {
    "nan": (with_nan, "'q.lora_B' holds NaN or infinite values"),
    "shape": (reshaped, "'q.lora_A' has shape (4, 5), expected (4, 6)"),
    "fingerprint": (
        lambda m: reply_content(near(5), 4, m, fingerprint="ffffffffffffffff"),
        "fingerprint 'ffffffffffffffff' does not match",
    ),
    "norm": (oversized, "exceeds the bound 10"),
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
    "examples": (lambda m: reply_content(near(10), 0, m), "num-examples must be positive"),
    "no arrays": (lambda m: reply_content(None, 4, m), "reply lacks arrays"),
    "flower error": (lambda m: Error(code=1, reason="node crashed"), "node crashed"),
}


def test_each_bad_reply_is_rejected_with_its_reason_and_the_round_completes(caplog) -> None:
    bad = {20 + i: site for i, site in enumerate(BAD_SITES.values())}
    grid = SiteGrid({1: good(1, 2), 2: good(2, 6), **{n: site for n, (site, _) in bad.items()}})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=2, max_update_norm=BOUND)
    with caplog.at_level(logging.WARNING, logger="server.strategy"):
        result = run_round(strategy, grid, CURRENT)

    one, two = near(1), near(2)
    for name in CURRENT:
        np.testing.assert_allclose(result[name], (2 * one[name] + 6 * two[name]) / 8, rtol=1e-6)
    assert sorted(strategy.round_log.sites) == [1, 2]
    assert set(strategy.round_log.rejected) == set(bad)
    for node, (_, reason) in bad.items():
        assert reason in strategy.round_log.rejected[node]
        assert any(
            f"site {node} in round 1" in r.getMessage() and reason in r.getMessage()
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
    run_round(strategy, grid, CURRENT)
    assert sorted(strategy.round_log.sites) == [1, 2]
    assert list(strategy.round_log.rejected) == [3]
    assert "Node Unavailable" in strategy.round_log.rejected[3]


def test_a_refusal_is_an_answer_not_a_rejection(caplog) -> None:
    refusal = "privacy budget exhausted: epsilon 8.2 > 8.0"

    def refusing(m: Message) -> RecordDict:
        return reply_content(None, 0, m, status=STATUS_REFUSED, reason=refusal)

    grid = SiteGrid({1: good(1, 2), 2: good(2, 6), 3: refusing})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=3)
    with caplog.at_level(logging.WARNING, logger="server.strategy"):
        run_round(strategy, grid, CURRENT)
    assert strategy.round_log.refused == {3: refusal}
    assert strategy.round_log.rejected == {}
    assert strategy.round_log.epsilon == {1: 1.0, 2: 1.0, 3: 1.0}
    assert f"site 3 refused round 1: {refusal}" in caplog.text


def test_too_few_valid_replies_stop_the_round_naming_every_reason() -> None:
    grid = SiteGrid({1: good(1, 2), 2: with_nan, 3: reshaped})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=3)
    with pytest.raises(TooFewReplies) as raised:
        run_round(strategy, grid, CURRENT)
    assert (raised.value.valid, raised.value.minimum) == (1, 2)
    assert "site 2: array 'q.lora_B' holds NaN" in str(raised.value)
    assert "site 3: array 'q.lora_A' has shape" in str(raised.value)


def test_rejected_arrays_never_reach_the_mean() -> None:
    """A NaN reply that slipped through would poison every coordinate of the result."""
    grid = SiteGrid({1: good(1, 2), 2: good(2, 6), 3: with_nan, 4: oversized})
    strategy = FedUmitStrategy(min_sites=2, min_available_sites=4, max_update_norm=BOUND)
    result = run_round(strategy, grid, CURRENT)
    assert all(np.isfinite(a).all() for a in result.values())
    assert max(float(np.abs(result[n] - CURRENT[n]).max()) for n in CURRENT) < 1.0
