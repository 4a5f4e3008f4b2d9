"""A consortium over real Flower processes on loopback, through failures.

One scenario, real processes all along: a SuperLink with TLS and SuperNode authentication, three
hospitals' SuperNodes (two keep their ClientApp warm, the default; one runs ``--cold``, a fresh
process per message), and ``fedumit launch`` running both stages. In ``align`` round 2 the cold
hospital's SuperNode is SIGKILLed while it trains (a crash, not a shutdown); the round finishes
with the other two, and the hospital restarts and rejoins the next round with its privacy ledger
intact. After the first ``instruct`` checkpoint the coordinator's SuperLink is SIGKILLed too and
restarted on the same database; the crashed run's ServerApp, which outlives it, is stopped when
it calls in, and ``fedumit launch --resume`` (no other option: the run goes on with the config it
started with) completes the run from its last checkpoint; should Flower's CLI start that launch
twice (it retries a request whose reply it lost; the scenario launches the resume twice under
one launch id), the second ServerApp ends without training. The tests below each check one part
of what the scenario left behind.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.config import load_site_config
from client.privacy import PrivacyLedger, epsilon_for
from server.launch_claim import CLAIMS
from simulations.synthetic import generate_consortium
from tests.deploy_fixtures import Consortium, running, wait_for

# The scenario runs in the module's first test's setup: the whole of it under one timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FEDERATION = "e2e"
RUN_ID = "e2e"
ROUNDS = 2  # per stage
RUN_CONFIG = (
    f"align.rounds={ROUNDS} instruct.rounds={ROUNDS} align.local-steps=2 instruct.local-steps=2 "
    "align.batch-size=2 instruct.batch-size=2 physical-batch-size=4 eval-every=0 "
    "eval-at-start=false min-sites=2 min-available-sites=3 round-timeout=300.0"
)


def run_scenario(c: Consortium, seen: dict[str, Any]) -> None:
    """Launch, crash a hospital mid-round and restart it, crash the SuperLink and resume."""
    archives = generate_consortium(c.root / "archives", n_sites=3, patients=4, seed=0)
    # The victim runs ``--cold`` (a fresh ClientApp process per message, the others warm): a
    # warm site trains a round of two tiny steps in about a second and can reply between the
    # log poll that sees its train message and the SIGKILL, a cold one takes tens of seconds.
    victim = archives[-1].name
    waits = seen.setdefault("waits", [])  # how long each step took, printed if one fails

    def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
        waits.append(
            f"{time.strftime('%H:%M:%S')} {what} after {wait_for(condition, timeout, what):.0f} s"
        )

    c.site_flags[victim] = ("--cold",)
    c.start(archives)
    c.launch(RUN_CONFIG)

    seen["victim"] = victim
    wait(lambda: c.record("align", 1) is not None, 600, "align round 1")
    wait(lambda: c.trains_received(victim) >= 2, 300, f"{victim} training align round 2")
    assert c.record("align", 2) is None, "the victim must die while align round 2 is open"
    c.processes.kill(c.nodes[victim])
    seen["ledger_at_kill"] = c.ledger(victim)
    wait(lambda: "offline" in c.statuses(), 180, f"the SuperLink to see {victim} offline")
    time.sleep(5)  # the coordinator polls every 0.2 s: it has the "node unavailable" reply now
    c.start_site(victim, "restarted")
    wait(lambda: c.record("align", 2) is not None, 300, "align round 2 without the victim")

    wait(lambda: c.checkpointed("instruct", 1), 600, "instruct round 1")
    c.processes.kill(c.link)
    seen["rounds_at_link_crash"] = trained_rounds(c)
    c.start_superlink("superlink-restarted")
    wait(lambda: c.statuses() == ["online"] * 3, 180, "the sites back on the new SuperLink")
    # The crashed run's ServerApp outlives the SuperLink; the new one stops it when it calls in.
    wait(lambda: "running" not in c.runs().values(), 180, "the crashed run to stop")
    # The resume is launched twice under one id, as Flower's CLI does when it retries a
    # StartRun whose reply it lost: the second ServerApp must end without training.
    c.resume(launch_id="resume-1")
    c.resume(launch_id="resume-1")
    wait(lambda: (c.run_folder / "export").is_dir(), 600, "the resumed run's export")
    seen["status"] = c.fedumit("status", "--federation", FEDERATION, "--run", str(c.run_folder))


def trained_rounds(c: Consortium) -> list[tuple[str, int]]:
    """(stage, round) of every training round recorded so far, in order."""
    return [(r["stage"], r["round"]) for r in c.records() if r["round"] > 0]


@dataclass
class Scenario:
    """The consortium after the scenario, and what was seen while it ran."""

    consortium: Consortium
    seen: dict[str, Any]

    def record(self, stage: str, server_round: int) -> dict[str, Any]:
        """The metrics record of a round the scenario finished."""
        found = self.consortium.record(stage, server_round)
        assert found is not None, (stage, server_round)
        return found


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Iterator[Scenario]:
    """The scenario, run once for this module; every process stopped at its end, pass or fail."""
    from shared_model.tiny import SPEC_FILE

    root = tmp_path_factory.mktemp("consortium")
    with running(root) as processes:
        consortium = Consortium(root, processes, tiny_base / SPEC_FILE, FEDERATION, RUN_ID)
        seen: dict[str, Any] = {}
        try:
            run_scenario(consortium, seen)
        except BaseException:  # pytest-timeout's failure too: print what each process said
            print("\n".join([*seen.get("waits", []), processes.tails()]))
            with contextlib.suppress(Exception):  # the SuperLink may be what failed
                print(consortium.server_logs())
            raise
        yield Scenario(consortium, seen)


def test_launch_runs_both_stages_over_three_authenticated_sites(scenario: Scenario) -> None:
    c = scenario.consortium
    assert (c.run_folder / "config.json").is_file()
    assert (c.run_folder / "export" / "config.json").is_file()
    for stage in ("align", "instruct"):
        for server_round in range(1, ROUNDS + 1):
            assert c.checkpointed(stage, server_round), (stage, server_round)
    assert len(scenario.record("align", 1)["sites"]) == 3
    status = scenario.seen["status"]
    assert "3 of 3 sites online" in status
    assert f"stage instruct, round {ROUNDS}/{ROUNDS}, exported" in status


def test_a_site_killed_mid_round_leaves_the_round_to_the_others(scenario: Scenario) -> None:
    record = scenario.record("align", 2)
    victim = scenario.seen["victim"]  # metrics name each site as the coordinator registered it
    assert len(record["sites"]) == 2 and victim not in record["sites"]
    assert victim in record["rejected"], record
    assert "failed" not in record


def test_the_restarted_site_rejoins_with_its_ledger_intact(scenario: Scenario) -> None:
    seen, victim = scenario.seen, scenario.seen["victim"]
    instruct = scenario.record("instruct", 1)
    assert victim in instruct["sites"] and len(instruct["sites"]) == 3
    before = seen["ledger_at_kill"]
    after = scenario.consortium.ledger(seen["victim"])
    assert before and after.startswith(before), "the ledger lost or rewrote lines"
    config = load_site_config(scenario.consortium.site_configs[seen["victim"]])
    entries = PrivacyLedger(config.ledger_path).entries()
    # The kill races the victim's align round 2: it can die before reserving the round, between
    # reserving and settling it (then the round stays counted at its reservation), or after
    # settling it, its reply never counted by the coordinator. Whichever: the round is in the
    # ledger only if it was written before the kill, and then it counts towards the budget.
    killed_round = [e for e in entries if (e.stage, e.server_round) == ("align", 2)]
    assert all(e.seq < before.count(b"\n") for e in killed_round)
    up_to_instruct_1 = [("align", 1), *[("align", 2)] * len(killed_round), ("instruct", 1)]
    assert [(e.stage, e.server_round) for e in entries][: len(up_to_instruct_1)] == up_to_instruct_1
    assert all(e.settled for e in entries if e not in killed_round)
    history = [e.mechanism for e in entries]
    delta = config.policy.delta
    reported_before_the_crash = scenario.record("align", 1)["epsilon"][victim]
    assert reported_before_the_crash == pytest.approx(epsilon_for(history[:1], delta=delta))
    reported_after = epsilon_for(history[: len(up_to_instruct_1)], delta=delta)
    assert instruct["epsilon"][victim] == pytest.approx(reported_after)
    assert instruct["epsilon"][victim] > reported_before_the_crash
    assert instruct["delta"][victim] == delta


def test_the_run_resumes_after_the_superlink_restarts(scenario: Scenario) -> None:
    planned = [(s, n) for s in ("align", "instruct") for n in range(1, ROUNDS + 1)]
    assert scenario.seen["rounds_at_link_crash"] == planned[:3]
    assert trained_rounds(scenario.consortium) == planned, "each round once, align not re-run"


def test_the_crashed_runs_serverapp_is_stopped_and_only_the_resumed_run_completes(
    scenario: Scenario,
) -> None:
    c = scenario.consortium
    runs = c.runs()
    # the ServerApp that drove each launch, in launch order: the first launch and the resume
    claims = sorted(
        (json.loads(path.read_text()) for path in (c.run_folder.parent / CLAIMS).iterdir()),
        key=lambda claim: claim["claimed_at"],
    )
    crashed, resumed = (str(claim["flower_run"]) for claim in claims)
    assert runs.pop(resumed) == "finished:completed", runs
    assert runs.pop(crashed) in ("finished:failed", "finished:stopped"), runs
    # the resume launched a second time, and any launch Flower's CLI started twice: such a
    # second run ends at once, without training
    assert runs, "the second launch of the resume left no run"
    logs = c.server_logs()
    for duplicate, status in runs.items():
        assert status == "finished:completed", (duplicate, status)
        assert f"so this run ({duplicate}) ends without training" in logs, logs
    assert logs.count("Start `flwr-serverapp` process") == 2 + len(runs), logs
