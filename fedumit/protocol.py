"""The messages a FedUMIT server and its sites exchange (Flower records), in one place.

Server -> site (``train`` and ``evaluate``):
    ``arrays``  the stage's global adapter arrays (float32, fixed order);
    ``stage1``  during ``instruct``: the frozen global ``align`` arrays, sent until the site
                reports it holds them (by hash);
    ``config``  stage, round, fingerprint, run id and the round's training knobs.
Site -> server:
    ``arrays``  updated adapter arrays (``train`` only, omitted when refused);
    ``metrics`` numbers only: ``num-examples``, ``train-loss``, ``steps``, ``seconds``,
                ``epsilon``, ``delta``, or ``<task>/<lang>/<metric>`` after evaluation;
    ``meta``    the echoed fingerprint, stage and round, ``status`` (``ok`` or ``refused``) and
                the ``reason`` of a refusal. No text, identifier or pixel from the archive.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

ARRAYS = "arrays"
STAGE1 = "stage1"
CONFIG = "config"
METRICS = "metrics"
META = "meta"

STATUS_OK = "ok"
STATUS_REFUSED = "refused"


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named arrays (order kept) as a Flower ``ArrayRecord``."""
    return ArrayRecord(OrderedDict((name, Array(np.asarray(a))) for name, a in arrays.items()))


def from_record(record: ArrayRecord) -> OrderedDict[str, np.ndarray]:
    """A Flower ``ArrayRecord`` as named numpy arrays, in the record's order."""
    return OrderedDict((name, array.numpy()) for name, array in record.items())


def arrays_hash(arrays: Mapping[str, np.ndarray]) -> str:
    """Content hash of named arrays (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        digest.update(f"{name}|{array.shape}|{array.dtype}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]
