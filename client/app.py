"""The FedUMIT ``ClientApp``: Flower messages in and out, everything else in :mod:`client.rounds`.

The site config path comes from the node config (``site-config``); the site's model, samples
and merged stage-1 base are built once per process (:func:`client.site.site_for`). A reply
carries adapter arrays and numbers only.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.rounds import RoundReply, evaluate_round, train_round
from client.site import Site, site_for
from fedumit.protocol import (
    ARRAYS,
    CONFIG,
    META,
    METRICS,
    STAGE1,
    STATUS_OK,
    STATUS_REFUSED,
    arrays_hash,
    from_record,
    to_record,
)

NODE_SITE_CONFIG = "site-config"
SIMULATION_SITES = "simulation-sites"

SiteResolver = Callable[[Context], Site]


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

    @client_app.train()
    def train(message: Message, context: Context) -> Message:
        """Train the round's stage locally and reply with the updated adapter."""
        return handle(resolve_site(context), message, train_round)

    @client_app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        """Evaluate the global adapter on the site's val split."""
        return handle(resolve_site(context), message, evaluate_round)

    return client_app


def handle(site: Site, message: Message, run_round) -> Message:
    """Run one round at ``site`` and build the reply: arrays and numbers only."""
    config = dict(message.content[CONFIG])
    try:
        arrays = from_record(message.content[ARRAYS])
        reply = run_round(site, arrays, config, _stage1(site, message, config))
    except ValueError as error:  # a mismatched fingerprint or array layout: refuse, say why
        reply = RoundReply(None, {"num-examples": 0.0}, status=STATUS_REFUSED, reason=str(error))
    content = RecordDict()
    if reply.arrays is not None:
        content[ARRAYS] = to_record(reply.arrays)
    content[METRICS] = MetricRecord({k: float(v) for k, v in reply.metrics.items()})
    content[META] = ConfigRecord(
        {
            "fingerprint": site.fingerprint,
            "stage": str(config.get("stage", "")),
            "server-round": int(config.get("server-round", 0)),
            "status": reply.status if reply.status else STATUS_OK,
            "reason": reply.reason,
            "notes": "; ".join(reply.notes),
            "stage1-hash": site_stage1_hash(site),
        }
    )
    return Message(content=content, reply_to=message)


def _stage1(site: Site, message: Message, config: dict):
    """The frozen global ``align`` arrays: sent with the message, or kept from an earlier one."""
    if config.get("stage") != "instruct" or not config.get("stage1-hash"):
        return None
    if STAGE1 in message.content:
        arrays = from_record(message.content[STAGE1])
        if arrays_hash(arrays) != config["stage1-hash"]:
            raise ValueError("stage-1 arrays do not match their announced hash")
        site.stage1 = arrays
    if site.stage1 is None or arrays_hash(site.stage1) != config["stage1-hash"]:
        raise ValueError("the server announced a stage-1 adapter this site does not hold")
    return site.stage1


def site_stage1_hash(site: Site) -> str:
    """Hash of the stage-1 adapter the site holds (empty when none)."""
    return arrays_hash(site.stage1) if site.stage1 is not None else ""


app = build_client_app()
