"""fanout: fast, polite, resumable concurrent HTTP fetching.

>>> import fanout
>>> results = fanout.fetch(["http://127.0.0.1:8080/a"])  # doctest: +SKIP
"""

from __future__ import annotations

from fanout._version import __version__
from fanout.aggregate import AggregateReport, FieldStats, aggregate, aggregate_async
from fanout.api import fetch
from fanout.engine import Fetcher
from fanout.errors import ConfigError, FanoutError, JournalError, SinkError, SourceError
from fanout.models import ErrorKind, Failure, Request, Result
from fanout.policy import Caps, Limits, RetryPolicy, Timeouts

__all__ = [
    "AggregateReport",
    "Caps",
    "ConfigError",
    "ErrorKind",
    "Failure",
    "FanoutError",
    "Fetcher",
    "FieldStats",
    "JournalError",
    "Limits",
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
