"""Counters and a latency histogram over results: the run's summary.

Memory is constant whatever the number of results: latencies go into
logarithmic buckets (each 2% wide), so percentiles are exact to within 2%.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

from fanout.engine.hoststats import HostSnapshot
from fanout.models import Result

__all__ = ["LatencyHistogram", "RunStats", "Summary", "format_summary"]

_GROWTH = 1.02
_LOG_GROWTH = math.log(_GROWTH)
_FLOOR = 1e-5  # 10 µs: anything faster lands in the first bucket


class LatencyHistogram:
    """Latencies in seconds, in log buckets; :meth:`quantile` reads them back.

    >>> h = LatencyHistogram()
    >>> for ms in range(1, 101): h.add(ms / 1000)
    >>> round(h.quantile(0.5) * 1000)
    50
    """

    __slots__ = ("_buckets", "count")

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0

    def add(self, seconds: float) -> None:
        """Record one latency."""
        index = 0 if seconds <= _FLOOR else int(math.log(seconds / _FLOOR) / _LOG_GROWTH) + 1
        self._buckets[index] += 1
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """The latency below which a fraction ``q`` of the records fall, or None if empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                if index == 0:
                    return _FLOOR
                # the bucket's geometric middle
                return float(_FLOOR * _GROWTH ** (index - 0.5))
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Summary:
    """A frozen snapshot of a run's statistics, ready to print or dump as JSON."""

    total: int
    ok: int
    failed: int
    duplicates: int
    retries: int
    bytes: int
    elapsed: float
    by_status: dict[str, int]
    by_error: dict[str, int]
    latency_ms: dict[str, float | None]
    already_done: int = 0
    dns: dict[str, int] | None = None
    hosts: list[HostSnapshot] | None = None
    transport: str | None = None  # "aiohttp" or "curl"

    @property
    def rate(self) -> float:
        """Results per second over the run."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """The summary as plain JSON-able data."""
        return {
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "already_done": self.already_done,
            "retries": self.retries,
            "bytes": self.bytes,
            "elapsed_s": round(self.elapsed, 3),
            "requests_per_s": round(self.rate, 1),
            "by_status": self.by_status,
            "by_error": self.by_error,
            "latency_ms": self.latency_ms,
            **({} if self.transport is None else {"transport": self.transport}),
            **({} if self.dns is None else {"dns": self.dns}),
            **({} if self.hosts is None else {"hosts": self.hosts}),
        }


@dataclass(slots=True)
class RunStats:
    """Live counters of a run; :meth:`summary` takes a frozen snapshot."""

    started: float = field(default_factory=time.perf_counter)
    ok: int = 0
    failed: int = 0
    duplicates: int = 0
    already_done: int = 0
    repaired_bytes: int = 0
    retries: int = 0
    bytes: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_error: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    dns: dict[str, int] | None = None  # the resolver's counters, at the end of a run
    hosts: list[HostSnapshot] | None = None  # the busiest hosts' figures, at the end of a run
    transport: str | None = None  # the transport that ran

    def add(self, result: Result) -> None:
        """Count one result."""
        if result.ok:
            self.ok += 1
        else:
            self.failed += 1
        if result.error is not None:
            self.by_error[str(result.error.kind)] += 1
        if result.status is not None:
            self.by_status[result.status] += 1
        if result.attempts > 1:
            self.retries += result.attempts - 1
        self.bytes += result.size
        if result.attempts:
            self.latency.add(result.elapsed)

    def add_counts(
        self,
        ok: bool,
        status: int | None,
        error: str | None,
        attempts: int,
        size: int,
        elapsed: float,
    ) -> None:
        """Count one result from its figures (a result a worker process fetched)."""
        # add()'s counting, from figures; not shared, so add() stays one call per request
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if error is not None:
            self.by_error[error] += 1
        if status is not None:
            self.by_status[status] += 1
        if attempts > 1:
            self.retries += attempts - 1
        self.bytes += size
        if attempts:
            self.latency.add(elapsed)

    def add_rejected(self, kind: str) -> None:
        """Count an input that failed before any request (bad line, bad URL)."""
        self.failed += 1
        self.by_error[kind] += 1

    @property
    def done(self) -> int:
        """Inputs accounted for so far, duplicates and already recorded ones included."""
        return self.ok + self.failed + self.duplicates + self.already_done

    def summary(self) -> Summary:
        """A frozen snapshot of the counters now."""
        latency = {
            f"p{round(q * 100)}": (
                None if (v := self.latency.quantile(q)) is None else round(v * 1000, 1)
            )
            for q in (0.5, 0.9, 0.99)
        }
        return Summary(
            total=self.done,
            ok=self.ok,
            failed=self.failed,
            duplicates=self.duplicates,
            retries=self.retries,
            bytes=self.bytes,
            elapsed=time.perf_counter() - self.started,
            by_status={str(k): v for k, v in sorted(self.by_status.items())},
            by_error=dict(sorted(self.by_error.items())),
            latency_ms=latency,
            already_done=self.already_done,
            dns=self.dns,
            hosts=self.hosts,
            transport=self.transport,
        )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def format_summary(summary: Summary) -> str:
    """The end-of-run summary, a few plain lines."""
    lines = [
        f"{summary.total:,} inputs in {summary.elapsed:.2f} s ({summary.rate:,.0f}/s): "
        f"{summary.ok:,} ok, {summary.failed:,} failed, "
        f"{summary.duplicates:,} duplicates skipped, {summary.retries:,} retries, "
        f"{_size(summary.bytes)}"
    ]
    if summary.already_done:
        lines.append(f"  journal: {summary.already_done:,} already recorded by earlier runs")
    if summary.by_status:
        lines.append("  status:  " + ", ".join(f"{k} x{v:,}" for k, v in summary.by_status.items()))
    if summary.by_error:
        lines.append("  errors:  " + ", ".join(f"{k} x{v:,}" for k, v in summary.by_error.items()))
    dns = summary.dns
    if dns and dns.get("lookups"):
        lines.append(
            f"  dns:     {dns['lookups']:,} lookups: {dns['cache_hits']:,} from the cache,"
            f" {dns['coalesced']:,} shared, {dns['queries']:,} queries;"
            f" {dns['failures']:,} failed"
        )
    latency = summary.latency_ms
    if latency.get("p50") is not None:
        lines.append(
            "  latency: "
            + ", ".join(f"{k} {v:,.1f} ms" for k, v in latency.items() if v is not None)
        )
    return "\n".join(lines)
