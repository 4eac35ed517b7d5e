"""Policies are checked on creation; the error names the field."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout import Caps, ConfigError, Limits, RetryPolicy, Timeouts


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Limits(concurrency=0), "concurrency"),
        (lambda: Limits(concurrency=-3), "concurrency"),
        (lambda: Limits(per_host=0), "per_host"),
        (lambda: Limits(rate=math.nan), "rate"),
        (lambda: Limits(per_host_rate=-1.0), "per_host_rate"),
        (lambda: Limits(rate=math.inf), "rate"),
        (lambda: Limits(burst=0), "burst"),
        (lambda: Limits(window=0), "window"),
        (lambda: Timeouts(connect=-1.0), "connect"),
        (lambda: Timeouts(read=math.nan), "read"),
        (lambda: Timeouts(total=0), "total"),
        (lambda: Caps(max_bytes=0), "max_bytes"),
        (lambda: Caps(max_redirects=-1), "max_redirects"),
        (lambda: RetryPolicy(attempts=0), "attempts"),
        (lambda: RetryPolicy(backoff=math.nan), "backoff"),
        (lambda: RetryPolicy(retry_statuses=frozenset({42})), "retry_statuses"),
        (lambda: RetryPolicy(retry_after_max=-5.0), "retry_after_max"),
    ],
)
def test_bad_values_name_the_field(make: object, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make()  # type: ignore[operator]


def test_defaults_are_bounded() -> None:
    limits = Limits()
    assert limits.per_host is not None
    assert Timeouts().read is not None
    assert Timeouts().connect is not None
    assert Timeouts().total is not None
    assert limits.effective_window == 2 * limits.concurrency


def test_booleans_are_not_numbers() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        Limits(concurrency=True)


def test_replace_checks_again() -> None:
    with pytest.raises(ConfigError, match="per_host"):
        replace(Limits(), per_host=0)


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff=0.5, backoff_max=3.0, jitter=False)
    assert [policy.delay(n, None) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_full_jitter_stays_within_the_bound() -> None:
    policy = RetryPolicy(backoff=1.0, backoff_max=8.0)
    rng = random.Random(7)
    delays = [policy.delay(3, None, rng) for _ in range(500)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert max(delays) > 3.0
    assert min(delays) < 1.0


def test_retry_after_replaces_backoff_and_is_capped() -> None:
    policy = RetryPolicy(retry_after_max=10.0)
    assert policy.delay(1, 4.0) == 4.0
    assert policy.delay(1, 3600.0) == 10.0
    ignoring = RetryPolicy(respect_retry_after=False, jitter=False, backoff=0.25)
    assert ignoring.delay(1, 4.0) == 0.25


@pytest.mark.parametrize("attempt", [1025, 1100, 10**6, 10**30])
def test_backoff_at_any_attempt_count_is_its_cap(attempt: int) -> None:
    # 2.0 ** 1024 raised OverflowError: a host failing a thousand times ended the run.
    policy = RetryPolicy(backoff=0.5, backoff_max=30.0, jitter=False)
    assert policy.delay(attempt, None) == 30.0


def test_odd_retry_after_values() -> None:
    policy = RetryPolicy(retry_after_max=10.0, jitter=False, backoff=0.25)
    assert policy.delay(1, -5.0) == 0.0
    assert policy.delay(1, math.inf) == 10.0
    assert policy.delay(1, math.nan) == 0.25  # ignored: the backoff applies


_POSITIVE = st.floats(min_value=5e-324, max_value=1.7976931348623157e308)


@given(
    attempt=st.integers(min_value=0, max_value=10**6),
    backoff=_POSITIVE,
    backoff_max=_POSITIVE,
    retry_after_max=_POSITIVE,
    jitter=st.booleans(),
    retry_after=st.none() | st.floats(),
    seed=st.integers(0, 2**32),
)
def test_delay_is_always_a_bounded_number(
    attempt: int,
    backoff: float,
    backoff_max: float,
    retry_after_max: float,
    jitter: bool,
    retry_after: float | None,
    seed: int,
) -> None:
    policy = RetryPolicy(
        backoff=backoff, backoff_max=backoff_max, retry_after_max=retry_after_max, jitter=jitter
    )
    delay = policy.delay(attempt, retry_after, random.Random(seed))
    assert math.isfinite(delay)
    assert 0.0 <= delay <= max(backoff_max, retry_after_max)
    if retry_after is None or math.isnan(retry_after):
        assert delay <= backoff_max
