"""Aggregation rules: one registry that the run config checks against, each rule built with its
own settings, FedProx's term in the training messages, state only where a rule keeps some."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import pytest

from protocol import CONFIG, to_record
from server.config import RUN_DEFAULTS, RunConfig, RunConfigError
from server.rules import (
    RULES,
    AggregationRule,
    FedAdam,
    FedAvg,
    FedProx,
    Median,
    TrimmedMean,
    build_rule,
    register,
)
from server.strategy import FedUmitStrategy
from tests.server_fixtures import SiteGrid, round_config, serverapp_identity

W = OrderedDict(w=np.array([0.0, 1.0], np.float32))


@pytest.fixture(autouse=True)
def _serverapp() -> Iterator[None]:
    with serverapp_identity():
        yield


def run_config(**overrides) -> RunConfig:
    return RunConfig.from_flat({**RUN_DEFAULTS, **overrides})


def test_the_registry_is_the_one_list_of_rules_the_run_config_accepts() -> None:
    assert set(RULES) == {"fedavg", "fedprox", "fedadam", "median", "trimmed-mean", "secagg"}
    for name in RULES:
        assert run_config(aggregation=name).aggregation == name
    with pytest.raises(RunConfigError, match=r"'fedsgd' is not one of \[") as error:
        run_config(aggregation="fedsgd")
    assert all(name in str(error.value) for name in RULES)


def test_each_rule_is_built_with_its_own_run_config_settings() -> None:
    settings = {"proximal-mu": 0.3, "server-lr": 0.02, "trim-fraction": 0.2}
    built = {name: build_rule(run_config(aggregation=name, **settings)) for name in RULES}
    assert [type(rule) for rule in built.values()] == list(RULES.values())
    assert built["fedprox"].proximal_mu == 0.3
    assert built["fedadam"].server_lr == 0.02
    assert built["trimmed-mean"].trim_fraction == 0.2


@pytest.mark.parametrize(
    "key, value, reason",
    [("max-update-norm", 0.0, "needs a positive bound"), ("min-sites", 1, "a sum of one")],
)
def test_secure_aggregation_needs_a_bound_and_two_sites(key: str, value, reason: str) -> None:
    with pytest.raises(RunConfigError, match=reason) as error:
        run_config(aggregation="secagg", **{key: value})
    assert error.value.key == key


def test_a_rule_registers_once_under_its_name() -> None:
    @register
    class Mean(FedAvg):
        name = "test-mean"

    try:
        assert RULES["test-mean"] is Mean
        with pytest.raises(ValueError, match="registered twice"):
            register(Mean)
    finally:
        del RULES["test-mean"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: FedProx(proximal_mu=-0.1),
        lambda: FedAdam(server_lr=-1.0),
        lambda: FedAdam(server_lr=0.1, beta1=1.0),
        lambda: TrimmedMean(trim_fraction=0.5),
    ],
    ids=["mu", "lr", "beta1", "trim"],
)
def test_impossible_settings_are_refused(make) -> None:
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize(
    "rule, mu", [(FedProx(proximal_mu=0.25), 0.25), (FedAvg(), None), (FedAdam(0.1), None)]
)
def test_only_fedprox_sends_its_proximal_term(rule: AggregationRule, mu: float | None) -> None:
    grid = SiteGrid({2: None, 3: None})
    strategy = FedUmitStrategy(rule)
    for message in strategy.configure_train(1, to_record(W), round_config(), grid):
        assert message.content[CONFIG].get("proximal-mu") == mu
    for message in strategy.configure_evaluate(1, to_record(W), round_config(), grid):
        assert "proximal-mu" not in message.content[CONFIG]


def adam_round(strategy: FedUmitStrategy, mean: OrderedDict) -> OrderedDict:
    strategy.rule.begin(W)
    strategy.rule.fold(mean, 1.0)
    return strategy.rule.result()


def test_the_strategys_state_is_its_rules_and_restores_exactly() -> None:
    means = [OrderedDict(w=np.array(v, np.float32)) for v in ([0.5, 0.9], [0.2, 1.4])]
    first = FedUmitStrategy(FedAdam(server_lr=0.1))
    adam_round(first, means[0])
    state = first.state_dict()
    assert sorted(state) == ["m/w", "v/w"]
    second = FedUmitStrategy(FedAdam(server_lr=0.1))
    second.load_state_dict(state)
    np.testing.assert_array_equal(
        adam_round(second, means[1])["w"], adam_round(first, means[1])["w"]
    )
    second.load_state_dict({})  # a new stage starts afresh
    assert second.state_dict() == {}


@pytest.mark.parametrize("rule", [FedAvg(), FedProx(0.1), Median(), TrimmedMean()])
def test_a_stateless_rule_keeps_no_state_and_refuses_anothers(rule: AggregationRule) -> None:
    strategy = FedUmitStrategy(rule)
    assert strategy.state_dict() == {}
    strategy.load_state_dict({})
    with pytest.raises(ValueError, match="keeps no state"):
        strategy.load_state_dict({"m/w": W["w"]})  # FedAdam's


def test_fedadam_refuses_state_it_did_not_write() -> None:
    with pytest.raises(ValueError, match="fedadam state holds no"):
        FedAdam(0.1).load_state_dict({"momentum/w": W["w"]})
