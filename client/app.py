"""The FedUMIT ``ClientApp``: Flower messages in and out, everything else in :mod:`client.rounds`.

The site config path comes from the node config (``site-config``); the site's model, samples
and merged stage-1 base are built once per process (:func:`client.site.site_for`). A reply
carries adapter arrays, numbers and the fixed fields of :mod:`protocol` only; the site reads only
the config keys :mod:`protocol` names, and records every message and reply in its audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.journal import JournalError
from client.refusal import SiteRefusal
from client.rounds import RoundReply, evaluate_round, train_round
from client.secure_aggregation import secure_aggregation_mod
from client.site import Site, site_for
from client.stage1_store import SHA256_HEX
from protocol import (
    ARRAYS,
    CONFIG,
    EVALUATE_CONFIG_KEYS,
    META,
    METRICS,
    STAGE1,
    STATUS_OK,
    STATUS_REFUSED,
    TRAIN_CONFIG_KEYS,
    Refusal,
    from_record,
    to_record,
)

log = logging.getLogger(__name__)

NODE_SITE_CONFIG = "site-config"
SIMULATION_SITES = "simulation-sites"

SiteResolver = Callable[[Context], Site]
RoundRunner = Callable[
    [Site, Mapping[str, np.ndarray], Mapping[str, Any], Mapping[str, np.ndarray] | None],
    RoundReply,
]


def site_from_context(context: Context) -> Site:
    """The site of this node: ``site-config`` in the node config (a SuperNode's
    ``--node-config``), or, in a simulation, entry ``partition-id`` of the run config's
    comma-separated ``simulation-sites``."""
    path = context.node_config.get(NODE_SITE_CONFIG)
    sites = str(context.run_config.get(SIMULATION_SITES, ""))
    if not path and sites and "partition-id" in context.node_config:
        path = sites.split(",")[int(context.node_config["partition-id"])]
    if not path:
        raise ValueError(
            f"node config has no {NODE_SITE_CONFIG!r}: start the SuperNode with "
            f"--node-config \"{NODE_SITE_CONFIG}='site_configs/X.toml'\""
        )
    return site_for(str(path))


def build_client_app(resolve_site: SiteResolver = site_from_context) -> ClientApp:
    """A ClientApp whose messages run at the site ``resolve_site`` picks for the node."""
    client_app = ClientApp()

    def at_site(message: Message, context: Context, run_round: RoundRunner) -> Message:
        try:
            site = resolve_site(context)
        except Exception:  # a site that cannot even start says no more than that
            log.exception("cannot set up this node's site; the server is told internal-error")
            meta = {"status": STATUS_REFUSED, "reason": Refusal.INTERNAL_ERROR.value}
            return Message(content=RecordDict({META: ConfigRecord(meta)}), reply_to=message)
        return handle(site, message, run_round)

    @client_app.train(mods=[secure_aggregation_mod(resolve_site)])
    def train(message: Message, context: Context) -> Message:
        """Train the round's stage locally and reply with the updated adapter."""
        return at_site(message, context, train_round)

    @client_app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        """Evaluate the global adapter on a split the site's policy allows."""
        return at_site(message, context, evaluate_round)

    return client_app


def handle(site: Site, message: Message, run_round: RoundRunner) -> Message:
    """Run one round at ``site`` and build the reply: arrays and numbers only.

    The message is recorded in the site's audit log before anything runs, and the reply before
    it leaves. A :class:`SiteRefusal` becomes a refusal with its code; any other exception
    becomes ``internal-error``, its detail written to the site's log only.
    """
    received = dict(message.content[CONFIG]) if CONFIG in message.content else {}
    allowed = (
        TRAIN_CONFIG_KEYS if message.metadata.message_type == "train" else EVALUATE_CONFIG_KEYS
    )
    ignored = sorted(set(received) - set(allowed))
    if ignored:
        site.log.warning("ignoring server config keys %s: the site's own policy decides", ignored)
    config = {key: received[key] for key in allowed if key in received}
    try:
        site.audit.received(message, received, ignored, APP_IDENTITY)
    except JournalError as error:
        site.log.error("cannot record the message in the audit log: %s", error)
        return _bare_refusal(site, message, config)
    try:
        arrays = from_record(message.content[ARRAYS]) if ARRAYS in message.content else {}
        reply, status, code = (
            run_round(site, arrays, config, _stage1(site, message, config)),
            STATUS_OK,
            "",
        )
    except SiteRefusal as refusal:
        site.log.warning("refused (%s): %s", refusal.code.value, refusal.detail)
        reply, status, code = RoundReply(None, _spent(site)), STATUS_REFUSED, refusal.code.value
    except Exception:
        site.log.exception("unexpected error; the server is told only %s", Refusal.INTERNAL_ERROR)
        reply, status = RoundReply(None, _spent(site)), STATUS_REFUSED
        code = Refusal.INTERNAL_ERROR.value
    answer = Message(content=_reply_content(site, config, reply, status, code), reply_to=message)
    try:
        site.audit.replied(message, answer, config, reply.metrics.get("epsilon"))
    except JournalError as error:
        site.log.error("cannot record the reply in the audit log, not sending it: %s", error)
        return _bare_refusal(site, message, config)
    return answer


def _reply_content(
    site: Site, config: dict[str, Any], reply: RoundReply, status: str, code: str
) -> RecordDict:
    content = RecordDict()
    if reply.arrays is not None:
        content[ARRAYS] = to_record(reply.arrays)
    content[METRICS] = MetricRecord({k: float(v) for k, v in reply.metrics.items()})
    content[META] = ConfigRecord(
        {
            "fingerprint": site.fingerprint,
            "stage": str(config.get("stage", "")),
            "server-round": _int_or_zero(config.get("server-round")),
            "status": status,
            "reason": code,
            "clamped": ",".join(reply.clamped),
            "stage1-hash": site_stage1_hash(site, config),
            "site": site.config.name,
        }
    )
    return content


def _bare_refusal(site: Site, message: Message, config: dict[str, Any]) -> Message:
    """A refusal with nothing but fixed fields, sent when the audit log cannot record."""
    reply = RoundReply(None, {"num-examples": 0.0})
    content = _reply_content(site, config, reply, STATUS_REFUSED, Refusal.AUDIT_LOG.value)
    return Message(content=content, reply_to=message)


def _spent(site: Site) -> dict[str, float]:
    """What a refusal reports: no examples and, when the ledger can be read, the epsilon spent."""
    policy = site.config.policy
    try:
        return {
            "num-examples": 0.0,
            "epsilon": site.ledger.epsilon(delta=policy.delta),
            "delta": policy.delta,
        }
    except JournalError:
        return {"num-examples": 0.0}


def _int_or_zero(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _stage1(site: Site, message: Message, config: dict[str, Any]):
    """The frozen global ``align`` arrays the message announces by ``stage1-hash``: sent with
    it (then kept in the site's stage-1 store) or kept from an earlier message."""
    announced = _announced_stage1(config)
    if not announced:
        return None
    if STAGE1 in message.content:
        arrays = from_record(message.content[STAGE1])
        try:
            site.stage1_store.put(arrays, announced)
        except ValueError as error:
            raise SiteRefusal(Refusal.STAGE1_MISSING, str(error)) from error
        return arrays
    arrays = site.stage1_store.get(announced)
    if arrays is None:
        raise SiteRefusal(Refusal.STAGE1_MISSING, f"stage-1 adapter {announced} is not here")
    return arrays


def _announced_stage1(config: dict[str, Any]) -> str:
    """The ``stage1-hash`` of an ``instruct`` message (empty otherwise); a malformed one is a
    bad request."""
    announced = str(config.get("stage1-hash", "")) if config.get("stage") == "instruct" else ""
    if announced and not SHA256_HEX.match(announced):
        raise SiteRefusal(Refusal.BAD_REQUEST, f"stage1-hash {announced!r} is not a SHA-256")
    return announced


def app_identity() -> str:
    """The running app: the Flower app bundle (FAB) it was installed from when Flower installed
    it (``<publisher>.<name>.<version>.<hash prefix>``), else the installed FedUMIT version."""
    root = Path(__file__).resolve().parents[1]
    if root.parent.name == "apps":
        return f"fab:{root.name}"
    try:
        return f"fedumit:{version('fedumit')}"
    except PackageNotFoundError:
        return "fedumit:source"


APP_IDENTITY = app_identity()


def site_stage1_hash(site: Site, config: dict[str, Any]) -> str:
    """The announced stage-1 hash when the site holds that adapter, else empty."""
    try:
        announced = _announced_stage1(config)
    except SiteRefusal:
        return ""
    return announced if announced and site.stage1_store.get(announced) is not None else ""


app = build_client_app()
