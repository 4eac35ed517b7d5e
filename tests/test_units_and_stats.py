"""Durations, sizes and the run summary: pure functions, checked exactly."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout import ErrorKind, Failure, Request, Result
from fanout.cli.units import parse_duration, parse_size
from fanout.output.stats import LatencyHistogram, RunStats


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("2s", 2.0), ("1.5", 1.5), ("2m", 120.0), ("1h", 3600.0), (" 3 S ", 3.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("10MB", 10_000_000), ("512KiB", 524_288), ("1000", 1000), ("1.5kB", 1500), ("2GiB", 2**31)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "soon", "-1s", "1e400", "5x", "ms", "1..2"])
def test_bad_durations_and_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        parse_duration(text)
    with pytest.raises(ValueError, match="not a"):
        parse_size(text)


@given(st.lists(st.floats(min_value=1e-4, max_value=100.0), min_size=1, max_size=300))
def test_histogram_quantiles_within_two_percent(latencies: list[float]) -> None:
    histogram = LatencyHistogram()
    for value in latencies:
        histogram.add(value)
    ordered = sorted(latencies)
    for q in (0.5, 0.9, 0.99):
        exact = ordered[max(1, -(-int(q * 1_000_000) * len(ordered) // 1_000_000)) - 1]
        got = histogram.quantile(q)
        assert got is not None
        assert abs(got - exact) <= 0.0201 * exact


def test_run_stats_summary_counts_everything() -> None:
    stats = RunStats()
    request = Request("http://127.0.0.1/")
    elapsed = [0.010, 0.020, 0.030, 0.040]
    for seconds in elapsed:
        stats.add(Result(request=request, status=200, size=10, attempts=1, elapsed=seconds))
    stats.add(
        Result(
            request=request,
            status=503,
            attempts=3,
            elapsed=0.5,
            error=Failure(ErrorKind.HTTP_STATUS, "HTTP 503"),
        )
    )
    stats.add_rejected("invalid_url")
    stats.duplicates += 2
    summary = stats.summary()
    assert (summary.total, summary.ok, summary.failed, summary.duplicates) == (8, 4, 2, 2)
    assert summary.retries == 2
    assert summary.bytes == 40
    assert summary.by_status == {"200": 4, "503": 1}
    assert summary.by_error == {"http_status": 1, "invalid_url": 1}
    p50 = summary.latency_ms["p50"]
    assert p50 is not None
    assert abs(p50 - statistics.median_low([*elapsed, 0.5]) * 1000) <= 0.02 * 30
