"""Per-host figures for a live view: requests done, 429s, recent rate, latency.

A :class:`HostCounters` is kept per host key in a bounded LRU table
(:class:`HostCounters` of at most ``capacity`` hosts, the least recently
made forgotten first), so a host's figures outlive its scheduling state
(dropped as soon as it is idle) while memory stays flat in the number of
hosts. Recording an attempt costs two counter increments and two bounded
deque appends; quantiles and rates are worked out only when a snapshot is
taken.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Final, TypedDict

from fanout.urls import HostKey

__all__ = ["RATE_WINDOW", "SAMPLES", "HostCounters", "HostSnapshot", "HostTable", "quantile"]

SAMPLES: Final = 128
"""Latencies and end times kept per host (the most recent)."""

RATE_WINDOW: Final = 10.0
"""Seconds over which the recent request rate is measured."""


class HostSnapshot(TypedDict):
    """One host's figures at one moment (see :meth:`fanout.Fetcher.host_stats`)."""

    host: str
    in_flight: int
    slots: int | None
    requests: int
    requests_per_s: float
    rate_limit: float | None
    rate_source: str | None
    cool_down_s: float
    throttled: int
    p50_ms: float | None
    p95_ms: float | None


class HostCounters:
    """What was counted for one host: attempts ended, 429s, and the most
    recent attempts' end times and latencies (on ``time.perf_counter``)."""

    __slots__ = ("ends", "first", "latencies", "requests", "throttled")

    def __init__(self) -> None:
        self.requests = 0
        self.throttled = 0
        self.first = math.inf  # when the first counted attempt started
        self.ends: deque[float] = deque(maxlen=SAMPLES)
        self.latencies: deque[float] = deque(maxlen=SAMPLES)

    def rate(self, now: float, window: float = RATE_WINDOW) -> float:
        """Attempts per second that ended over the last ``window`` seconds (or
        since the first attempt, when that is more recent)."""
        ends = self.ends
        if not ends:
            return 0.0
        since = now - window
        count = sum(1 for end in ends if end > since)
        if count == 0:
            return 0.0
        full = count == len(ends) == ends.maxlen  # the window holds more than the samples kept
        span = now - ends[0] if full else min(window, now - self.first)
        return count / span if span > 0 else 0.0


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``values`` (nearest rank), or None."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


class HostTable:
    """At most ``capacity`` hosts' :class:`HostCounters`, the least recently
    asked for forgotten first.

    >>> table = HostTable(capacity=1)
    >>> a = table.get(("http", "a", 80))
    >>> a.requests += 1
    >>> table.get(("http", "a", 80)).requests
    1
    >>> _ = table.get(("http", "b", 80))
    >>> len(table), table.get(("http", "a", 80)).requests
    (1, 0)
    """

    __slots__ = ("_capacity", "entries")

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self.entries: OrderedDict[HostKey, HostCounters] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: HostKey) -> HostCounters:
        """The counters of ``key``, made when not kept; now the most recent."""
        entries = self.entries
        counters = entries.get(key)
        if counters is None:
            counters = entries[key] = HostCounters()
            if len(entries) > self._capacity:
                entries.popitem(last=False)
        else:
            entries.move_to_end(key)
        return counters
