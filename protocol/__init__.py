"""FedUMIT's wire protocol: every key, status and reason code a server and a site exchange.

Client and server both import this module; it imports nothing else of FedUMIT (Flower and numpy
only), so reading it is enough to know everything that can cross the wire.

Server -> site (``train`` and ``evaluate`` messages):
    ``arrays``  the stage's global adapter arrays (float32, fixed order), packed as every
                array record is (:func:`to_record`: their bytes and their layout, two arrays);
    ``stage1``  during ``instruct``: the frozen global ``align`` arrays, whose SHA-256
                (:func:`arrays_sha256`) every ``instruct`` message announces as ``stage1-hash``.
                Sent once per site and run: with the site's first ``instruct`` message, and
                again, in the same round, when the site answers ``stage1-missing`` to a message
                without them (a new site, a restarted one, a cleared cache). A site keeps them
                in its work folder by that hash and refuses arrays that do not match it;
    ``config``  the keys of :data:`TRAIN_CONFIG_KEYS` (``train``) or :data:`EVALUATE_CONFIG_KEYS`
                (``evaluate``). A site reads no other key: a seed, a split or a limit the server
                adds is ignored (and logged) by the site, whose own policy decides those.
Site -> server:
    ``arrays``  updated adapter arrays (``train`` only, omitted when refused);
    ``metrics`` numbers only: the keys of :data:`TRAIN_METRIC_KEYS` (``train-loss`` only where the
                site's policy allows it) or, after evaluation, ``num-examples`` and rounded
                ``<task>/<lang>/<metric>`` scores of groups at least the site's minimum size;
    ``meta``    the keys of :data:`META_KEYS`: the echoed fingerprint, stage and round, ``status``
                (``ok`` or ``refused``), the refusal's :class:`Refusal` code, the policy keys that
                clamped the request, the announced stage-1 hash when the site holds that
                adapter (else empty), and ``site``, the ``[site] name`` of the site's config
                (:data:`SITE_NAME`).
No text, identifier, path, exception message or pixel from a site ever crosses the wire.

Under secure aggregation (run config ``aggregation = "secagg"``) a training round is Flower's
SecAgg+ protocol: its ``secaggplus`` config record rides on four ``train`` messages (keys, key
shares, the FedUMIT training message above, unmasking); the site's reply to the training message
carries the ``metrics`` (without ``num-examples``) and ``meta`` above and, instead of ``arrays``,
its update clipped to ``max-update-norm``, masked (see :mod:`client.secure_aggregation`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from enum import StrEnum

import numpy as np
from flwr.app import Array, ArrayRecord

ARRAYS = "arrays"
STAGE1 = "stage1"
CONFIG = "config"
METRICS = "metrics"
META = "meta"

STATUS_OK = "ok"
STATUS_REFUSED = "refused"

TRAIN_CONFIG_KEYS = (
    "stage",
    "server-round",
    "fingerprint",
    "run-id",
    "lr",
    "local-steps",
    "local-epochs",
    "batch-size",
    "dp",
    "noise-multiplier",
    "max-grad-norm",
    "physical-batch-size",
    "proximal-mu",
    "rounds-left",
    "stage1-hash",
    "max-update-norm",
)
EVALUATE_CONFIG_KEYS = ("stage", "server-round", "fingerprint", "run-id", "split", "stage1-hash")
TRAIN_METRIC_KEYS = (
    "num-examples",
    "train-loss",
    "steps",
    "seconds",
    "epsilon",
    "delta",
    "noise-multiplier",
)
META_KEYS = (
    "fingerprint",
    "stage",
    "server-round",
    "status",
    "reason",
    "clamped",
    "stage1-hash",
    "site",
)

# A site's name: its config's ``[site] name``, the name of its key files in the consortium PKI
# and of its registration on the SuperLink. Safe as a file name, a JSON key and a table cell.
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Refusal(StrEnum):
    """Why a site did not do what a message asked: the only reasons that leave a site.

    The detail (which value, which file) stays in the site's own log and audit record.
    """

    BUDGET_EXHAUSTED = "budget-exhausted"
    BUDGET_EXCEEDED = "budget-exceeded"
    POLICY_STAGE = "policy-stage"
    POLICY_REQUIRES_DP = "policy-requires-dp"
    POLICY_SPLIT = "policy-split"
    POLICY_EVALUATION_CAP = "policy-evaluation-cap"
    FINGERPRINT = "fingerprint-mismatch"
    ARRAY_LAYOUT = "array-layout-mismatch"
    UNKNOWN_STAGE = "unknown-stage"
    BAD_REQUEST = "bad-request"
    STAGE1_MISSING = "stage1-missing"
    NO_RECORDS = "no-records"
    LEDGER_MISSING = "ledger-missing"
    LEDGER_DAMAGED = "ledger-damaged"
    LEDGER_UNIT = "ledger-unit-mismatch"
    AUDIT_LOG = "audit-log-unusable"
    INTERNAL_ERROR = "internal-error"


REFUSAL_MEANINGS: dict[Refusal, str] = {
    Refusal.BUDGET_EXHAUSTED: "the site's privacy budget is spent",
    Refusal.BUDGET_EXCEEDED: "this round would take the site beyond its privacy budget",
    Refusal.POLICY_STAGE: "the site's policy does not allow this stage",
    Refusal.POLICY_REQUIRES_DP: "the site only trains with differential privacy",
    Refusal.POLICY_SPLIT: "the site's policy does not allow evaluation on this split",
    Refusal.POLICY_EVALUATION_CAP: "the site's cap on evaluations is reached",
    Refusal.FINGERPRINT: "the message is for another base checkpoint or adapter layout",
    Refusal.ARRAY_LAYOUT: "the arrays' names, shapes or dtypes differ from the agreed layout",
    Refusal.UNKNOWN_STAGE: "the message names a stage this version does not know",
    Refusal.BAD_REQUEST: "a config value is missing or malformed",
    Refusal.STAGE1_MISSING: "the site does not hold the stage-1 adapter the message announced",
    Refusal.NO_RECORDS: "the site has no usable records for this stage or split",
    Refusal.LEDGER_MISSING: "the site's privacy ledger is missing: a person must act",
    Refusal.LEDGER_DAMAGED: "the site's privacy ledger is damaged: a person must act",
    Refusal.LEDGER_UNIT: "the ledger was started for another privacy unit",
    Refusal.AUDIT_LOG: "the site cannot record the exchange in its audit log: a person must act",
    Refusal.INTERNAL_ERROR: "an unexpected error at the site (details in the site's log)",
}


# Under secure aggregation a site that refuses the round drops out of SecAgg+: its reply is an
# error whose text holds this prefix and the refusal's code (and nothing else from the site).
SECAGG_REFUSED = "refused: "


def secagg_refusal(error_reason: str) -> Refusal | None:
    """The refusal code a secure-aggregation error reply carries, ``None`` when it has none."""
    found = re.search(re.escape(SECAGG_REFUSED) + r"([a-z0-9-]+)", error_reason)
    code = found.group(1) if found else ""
    return Refusal(code) if code in Refusal._value2member_map_ else None


# Named arrays travel packed: one ``Array`` of their bytes end to end and one of their layout
# (names, dtypes, shapes, in order, as JSON). Flower moves every ``Array`` as its own object,
# one request per hop (ServerApp, SuperLink, SuperNode, ClientApp): a full-shape adapter is
# 260 to 396 arrays, and at one object each a round spent tens of seconds on requests alone.
PACKED_LAYOUT = "layout"
PACKED_DATA = "data"


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named arrays (order kept) packed into a Flower ``ArrayRecord`` of two arrays."""
    arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    layout = [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()]
    data = b"".join(a.tobytes() for a in arrays.values())
    return ArrayRecord(
        OrderedDict(
            (
                (PACKED_LAYOUT, Array(np.frombuffer(json.dumps(layout).encode(), np.uint8))),
                (PACKED_DATA, Array(np.frombuffer(data, np.uint8))),
            )
        )
    )


def from_record(record: ArrayRecord) -> OrderedDict[str, np.ndarray]:
    """The named arrays of a record :func:`to_record` packed, in their order; ``ValueError``
    when the record is not one."""
    if list(record) != [PACKED_LAYOUT, PACKED_DATA]:
        raise ValueError(f"not packed arrays: entries {list(record)[:4]}")
    layout, data = (record[key].numpy() for key in (PACKED_LAYOUT, PACKED_DATA))
    if layout.dtype != np.uint8 or data.dtype != np.uint8 or data.ndim != 1:
        raise ValueError("packed arrays must be bytes")
    entries = json.loads(layout.tobytes().decode())
    if not isinstance(entries, list):
        raise ValueError("a packed layout is a list")
    arrays, offset = OrderedDict(), 0
    for entry in entries:
        name, dtype, shape = _layout_entry(entry)
        count = math.prod(shape)
        if offset + count * dtype.itemsize > data.size:
            raise ValueError(f"packed arrays end before array {name!r}")
        array = np.frombuffer(data, dtype, count, offset).reshape(shape).copy()
        arrays[name], offset = array, offset + count * dtype.itemsize
    if offset != data.size or len(arrays) != len(entries):
        raise ValueError("packed arrays hold bytes or names their layout does not account for")
    return arrays


def _layout_entry(entry: object) -> tuple[str, np.dtype, tuple[int, ...]]:
    """One ``[name, dtype, shape]`` of a packed layout, checked (numeric dtypes only)."""
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)):
        raise ValueError(f"malformed packed layout entry {entry!r:.80}")
    name, dtype, shape = entry[0], np.dtype(str(entry[1])), entry[2]
    if dtype.kind not in "biuf" or not isinstance(shape, list):
        raise ValueError(f"array {name!r}: dtype {dtype} or shape {shape!r:.40} not allowed")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"array {name!r}: shape {shape!r:.40} not allowed")
    return name, dtype, tuple(shape)


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of named arrays: names, shapes, dtypes and bytes, in order."""
    digest = hashlib.sha256()
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        digest.update(f"{name}|{array.shape}|{array.dtype}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def arrays_hash(arrays: Mapping[str, np.ndarray]) -> str:
    """Short content hash of named arrays (the first 16 hex digits of :func:`arrays_sha256`)."""
    return arrays_sha256(arrays)[:16]
