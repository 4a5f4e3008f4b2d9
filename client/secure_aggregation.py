"""The site's side of secure aggregation (run config ``aggregation = "secagg"``): Flower's SecAgg+.

A training round under secure aggregation is four messages from the server, told apart by the
``secaggplus`` config record Flower's ``SecAggPlusWorkflow`` adds: key setup, key sharing,
training with masking, unmasking. Flower's own :func:`~flwr.clientapp.mod.secaggplus_mod` runs
the protocol; this module wraps it so that

* a plain FedUMIT training message (FedAvg and the other rules) passes through untouched;
* the training message runs FedUMIT's ordinary round (:func:`client.app.handle`: policy,
  DP-SGD, privacy ledger, audit log), and only then is the result turned into what SecAgg+
  masks: the site's update (the DP-trained adapter minus the global one), its norm clipped to
  the round's bound (``max-update-norm``, per coordinate RMS, as the server checks plain
  replies), with weight 1;
* each protocol step, and what was masked (the update's norm before clipping, the bound, how
  many coordinates the quantiser's range cut, the SHA-256 of the masked vector that left), is
  recorded in the site's audit log before the reply leaves.

Why weight 1: SecAgg+ masks the weight together with the weighted update, so the server could not
check a site's claimed ``num-examples`` against ``max-num-examples`` (one site could claim a
billion and take over the mean), and Flower's legacy reply format would carry the count in clear
beside the masked vector. Every site's update weighs the same, the aggregate is the plain mean of
the sites' updates, and no count leaves the site. Privacy accounting is unchanged: what is masked
is the site's already-DP update.

A site that refuses the round (budget, policy, no records) cannot contribute a masked vector, so
it drops out of the protocol: its reply is an error whose text is ``refused: <code>`` (a
:class:`protocol.Refusal` code, nothing else), and SecAgg+ removes its masks as it does for any
site that drops after sharing its keys.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from client.site import Site
from protocol import ARRAYS, CONFIG, META, METRICS, SECAGG_REFUSED, STATUS_OK, from_record


class SecureAggregationRefusal(RuntimeError):
    """The site refused a secure-aggregation round: it drops out, telling only its code."""

    def __init__(self, code: str) -> None:
        super().__init__(f"{SECAGG_REFUSED}{code}")


def clip_update(
    update: Mapping[str, np.ndarray], max_rms: float
) -> tuple[OrderedDict[str, np.ndarray], float, float]:
    """``(clipped, rms, scale)``: the update scaled by ``scale <= 1`` so that its root-mean-square
    per coordinate (``||update||_2 / sqrt(n)``) is at most ``max_rms``."""
    squares = sum(float(np.sum(np.square(a, dtype=np.float64))) for a in update.values())
    coordinates = max(sum(int(np.size(a)) for a in update.values()), 1)
    rms = (squares / coordinates) ** 0.5
    scale = min(1.0, max_rms / rms) if rms > 0 else 1.0
    clipped = OrderedDict((n, (np.asarray(a, np.float64) * scale)) for n, a in update.items())
    return clipped, rms, scale


def is_secure_aggregation(message: Message) -> bool:
    """Whether ``message`` is a step of Flower's SecAgg+ protocol."""
    return message.has_content() and RECORD_KEY_CONFIGS in message.content.config_records


def secure_aggregation_mod(resolve_site: Callable[[Context], Site]) -> Mod:
    """A train-message mod: SecAgg+ messages through Flower's ``secaggplus_mod`` around the
    site's masked update, every other message straight to the ClientApp."""

    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if not is_secure_aggregation(message):
            return call_next(message, context)
        site = resolve_site(context)
        step = str(message.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE, ""))
        masked: dict[str, Any] = {}

        def masked_update(inner: Message, inner_context: Context) -> Message:
            return _update_to_mask(site, inner, inner_context, call_next, masked)

        reply = secaggplus_mod(message, context, masked_update)
        if step == Stage.COLLECT_MASKED_VECTORS:
            vector = reply.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
            masked["masked_sha256"] = hashlib.sha256(b"".join(vector)).hexdigest()
            masked["masked_bytes"] = sum(len(part) for part in vector)
        site.audit.secure_aggregation(message, step, masked)
        return reply

    return mod


def _update_to_mask(
    site: Site,
    message: Message,
    context: Context,
    call_next: ClientAppCallable,
    masked: dict[str, Any],
) -> Message:
    """Run the site's ordinary training round, then hand SecAgg+ the clipped update (weight 1)
    in Flower's legacy reply format; the reply keeps FedUMIT's metrics (less the example count)
    and meta."""
    reply = call_next(message, context)
    meta = reply.content[META]
    if meta.get("status") != STATUS_OK:
        raise SecureAggregationRefusal(str(meta.get("reason", "")))
    bound = float(message.content[CONFIG].get("max-update-norm", 0.0))
    if not bound > 0:
        site.log.warning("secure aggregation without a positive max-update-norm; not sending")
        raise SecureAggregationRefusal("bad-request")
    reference = from_record(message.content[ARRAYS])
    trained = from_record(reply.content[ARRAYS])
    update = OrderedDict((name, trained[name] - reference[name]) for name in reference)
    clipped, rms, scale = clip_update(update, bound)
    clipping_range = float(context.state.config_records[RECORD_KEY_STATE]["clipping_range"])
    beyond = sum(int(np.count_nonzero(np.abs(a) > clipping_range)) for a in clipped.values())
    masked.update(
        not_sent=["arrays", "num-examples"],  # of the reply recorded just before: masked instead
        update_rms=rms,
        max_update_norm=bound,
        scale=scale,
        clipping_range=clipping_range,
        coordinates_beyond_range=beyond,
    )
    if scale < 1.0:
        site.log.info("secure aggregation: update RMS %.4g clipped to %.4g", rms, bound)
    content = reply.content
    del content[ARRAYS]
    metrics = content[METRICS]
    del metrics["num-examples"]
    legacy = fitres_to_recorddict(
        FitRes(Status(Code.OK, ""), ndarrays_to_parameters(list(clipped.values())), 1, {}),
        keep_input=False,
    )
    for name, record in legacy.items():
        content[name] = record
    return Message(content=content, reply_to=message)
