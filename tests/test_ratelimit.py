"""The token bucket, with time injected: instant and exact."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fanout.engine.ratelimit import TokenBucket


def test_burst_then_steady_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3)
    now = 100.0
    for _ in range(3):
        assert bucket.wait(now) == 0.0
        bucket.take(now)
    assert abs(bucket.wait(now) - 0.1) < 1e-9
    assert bucket.wait(now + 0.1) == 0.0


@given(
    rate=st.floats(min_value=0.5, max_value=1000.0),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_times_window(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Whatever the demand, taken tokens fit burst + rate * t in every window."""
    bucket = TokenBucket(rate=rate, burst=burst)
    now = 0.0
    taken: list[float] = []
    for gap in gaps:
        now += gap
        now += bucket.wait(now)  # a caller that waits exactly as told
        bucket.take(now)
        taken.append(now)
    for i in range(len(taken)):
        for j in range(i, len(taken)):
            window = taken[j] - taken[i]
            assert j - i + 1 <= burst + rate * window + 1e-6


@given(rate=st.floats(min_value=0.1, max_value=100.0), burst=st.integers(1, 10))
def test_an_idle_bucket_is_full(rate: float, burst: int) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    bucket.take(0.0)
    later = burst / rate + 1.0
    assert bucket.idle(later)
    for _ in range(burst):
        assert bucket.wait(later) == 0.0
        bucket.take(later)


@given(
    rate=st.floats(min_value=0.1, max_value=1000.0),
    burst=st.integers(min_value=1, max_value=20),
    used=st.integers(min_value=0, max_value=30),
    gap=st.floats(min_value=0.0, max_value=5.0),
    tokens=st.integers(min_value=0, max_value=50),
)
def test_time_for_is_when_the_last_token_is_taken(
    rate: float, burst: int, used: int, gap: float, tokens: int
) -> None:
    """Taking ``tokens`` one by one, each as soon as it is free, the last is
    taken ``time_for(tokens)`` after ``now``, whatever was taken before."""
    bucket = TokenBucket(rate=rate, burst=burst)
    for _ in range(used):
        bucket.take(0.0 + bucket.wait(0.0))
    now = gap
    expected = bucket.time_for(tokens, now)
    at = now
    for _ in range(tokens):
        at += bucket.wait(at)
        bucket.take(at)
    assert abs(expected - (at - now)) <= 1e-6 * max(1.0, at)
