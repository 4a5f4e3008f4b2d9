"""Aggregation rules, one class each, registered by name (the run config's ``aggregation``).

A new rule is a module here with a class decorated by :func:`register`, imported below.
"""

from server.rules.base import RULES, AggregationRule, BufferedRule, build_rule, register
from server.rules.fedadam import FedAdam
from server.rules.fedavg import FedAvg
from server.rules.fedprox import FedProx
from server.rules.median import Median
from server.rules.secagg import SecureMean
from server.rules.trimmed_mean import TrimmedMean

__all__ = [
    "RULES",
    "AggregationRule",
    "BufferedRule",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "Median",
    "SecureMean",
    "TrimmedMean",
    "build_rule",
    "register",
]
