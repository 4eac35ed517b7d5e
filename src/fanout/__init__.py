"""fanout: fast, polite, resumable concurrent HTTP fetching.

>>> import fanout
>>> results = fanout.fetch(["http://127.0.0.1:8080/a"])  # doctest: +SKIP

Names are imported on first use (PEP 562), so ``fanout --help`` and a
``fanout fetch`` do not pay for the parts they do not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fanout._version import __version__

if TYPE_CHECKING:
    from fanout.aggregation import AggregateReport, FieldStats, aggregate, aggregate_async
    from fanout.api import fetch
    from fanout.config import FetcherConfig
    from fanout.engine import Fetcher
    from fanout.errors import (
        BodyError,
        ConfigError,
        FanoutError,
        JournalError,
        QueueError,
        SinkError,
        SourceError,
    )
    from fanout.models import ErrorKind, Failure, Request, Result
    from fanout.policy import Caps, Limits, RetryPolicy, Timeouts

__all__ = [
    "AggregateReport",
    "BodyError",
    "Caps",
    "ConfigError",
    "ErrorKind",
    "Failure",
    "FanoutError",
    "Fetcher",
    "FetcherConfig",
    "FieldStats",
    "JournalError",
    "Limits",
    "QueueError",
    "Request",
    "Result",
    "RetryPolicy",
    "SinkError",
    "SourceError",
    "Timeouts",
    "__version__",
    "aggregate",
    "aggregate_async",
    "fetch",
]

_HOMES = {
    "AggregateReport": "fanout.aggregation",
    "FieldStats": "fanout.aggregation",
    "aggregate": "fanout.aggregation",
    "aggregate_async": "fanout.aggregation",
    "fetch": "fanout.api",
    "FetcherConfig": "fanout.config",
    "Fetcher": "fanout.engine",
    "BodyError": "fanout.errors",
    "ConfigError": "fanout.errors",
    "FanoutError": "fanout.errors",
    "JournalError": "fanout.errors",
    "QueueError": "fanout.errors",
    "SinkError": "fanout.errors",
    "SourceError": "fanout.errors",
    "ErrorKind": "fanout.models",
    "Failure": "fanout.models",
    "Request": "fanout.models",
    "Result": "fanout.models",
    "Caps": "fanout.policy",
    "Limits": "fanout.policy",
    "RetryPolicy": "fanout.policy",
    "Timeouts": "fanout.policy",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'fanout' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
